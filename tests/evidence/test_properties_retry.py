"""Zero behaviour change for retry libraries, shown over random policies and random outcome sequences.

Each example runs one random policy against one random script of outcomes (return a value, raise one of several
exception types, raise KeyboardInterrupt; each attempt taking some fake time) twice: bare, then instrumented. What the
app can observe must be identical: the value returned, the very exception object raised (or the library's own error
with what it wraps), the number of attempts and every wait the library asked its sleep for. Then the spans must tell
what happened: one attempt span per attempt with the wait slept and the attempt's error, an operation span with the
attempt count, total delay and the result the contract prescribes.

Time is fake: the library's clock is patched and its sleep is a recorder that advances that clock, so delay-based
stops are exercised without sleeping. Random waits draw from a `random.Random` of the policy's own (patched into the
library's wait module), seeded the same for both runs: the SDK draws span ids from the global `random`, so a seeded
global generator would not give the instrumented run the same jitter.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any
from unittest import mock

import backoff
import backoff._async
import backoff._sync
import pytest
import retrying
import stamina
import stamina._core
import stamina.instrumentation
import tenacity
import tenacity.nap
import tenacity.wait
from hypothesis import event, given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_resilience import semconv
from otel_resilience.core.errors import error_type
from otel_resilience.instrumentation.backoff import BackoffInstrumentor
from otel_resilience.instrumentation.retrying import RetryingInstrumentor
from otel_resilience.instrumentation.stamina import StaminaInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from tests.conftest import Otel
from tests.support.evidence import PROPERTY_SETTINGS, children, describe, instrumented, point_counts


class Transient(Exception):
    """An app's own error type (module-qualified in `error.type`)."""


ERRORS: tuple[type[Exception], ...] = (ValueError, KeyError, ConnectionError, TimeoutError, Transient)
FILTER_TYPES: tuple[type[Exception], ...] = (ValueError, KeyError, OSError, Transient, Exception)
"""Types a policy may retry on; OSError covers ConnectionError and TimeoutError, Exception covers all but
KeyboardInterrupt."""
FINAL = "final"
"""What the script returns once its outcomes are used up: never rejected, so every retry loop ends."""

# --- a script of outcomes -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    kind: str  # "value", "raise" or "interrupt"
    arg: int  # the value returned, or the index in ERRORS
    cost: float  # fake seconds the attempt takes


outcomes = st.lists(
    st.builds(
        Outcome,
        kind=st.sampled_from(["raise", "raise", "value", "raise", "value", "raise", "raise", "raise", "interrupt"]),
        arg=st.integers(0, len(ERRORS) - 1),
        cost=st.sampled_from([0.0, 0.5, 2.0]),
    ),
    min_size=1,
    max_size=7,
)


class Clock:
    """The library's clock, advanced only by attempts and sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def datetime_class(self) -> type[datetime]:
        """For a library that reads ``datetime.datetime.now()``."""
        clock = self

        class ClockDatetime(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
                return datetime(2024, 1, 1) + timedelta(seconds=clock.now)

        return ClockDatetime


@dataclass
class Script:
    """The guarded code: plays its outcomes in order, then returns FINAL."""

    outcomes: list[Outcome]
    clock: Clock
    calls: int = 0
    raised: list[BaseException] = field(default_factory=list)
    raised_by_attempt: dict[int, BaseException] = field(default_factory=dict)
    started_at: list[float] = field(default_factory=list)  # the clock when each attempt began
    current_spans: list[int] = field(default_factory=list)

    def step(self) -> Any:
        index = self.calls
        self.calls += 1
        self.current_spans.append(trace.get_current_span().get_span_context().span_id)
        self.started_at.append(self.clock.now)
        if index >= len(self.outcomes):
            return FINAL
        outcome = self.outcomes[index]
        self.clock.now += outcome.cost
        if outcome.kind == "value":
            return outcome.arg
        exc: BaseException = (
            KeyboardInterrupt(f"interrupt {index}") if outcome.kind == "interrupt" else ERRORS[outcome.arg](f"attempt {index}")
        )
        self.raised.append(exc)
        self.raised_by_attempt[index] = exc
        raise exc

    def outcome_of(self, index: int) -> Outcome:
        return self.outcomes[index] if index < len(self.outcomes) else Outcome("value", -1, 0.0)


# --- a random policy --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    max_attempts: int | None  # stop after this many attempts (None: no attempt limit)
    max_delay: float | None  # stop once this much (fake) time has passed since the first attempt
    wait: tuple[Any, ...]
    retry_types: tuple[type[Exception], ...]
    retry_types_negated: bool  # retry on every exception NOT of these types (KeyboardInterrupt included)
    rejected_values: frozenset[int]
    reraise: bool
    fallback: bool  # retry_error_callback returns a value instead of raising
    values_only: bool  # backoff: on_predicate (values judged, errors escape) instead of on_exception
    seed: int

    def retries_error(self, exc_type: type[BaseException]) -> bool:
        """Whether the error filter retries `exc_type` (negated: every type but these, KeyboardInterrupt included,
        where the library looks at BaseExceptions at all)."""
        matches = issubclass(exc_type, self.retry_types)
        return not matches if self.retry_types_negated else matches


def error_type_of(outcome: Outcome) -> type[BaseException]:
    return KeyboardInterrupt if outcome.kind == "interrupt" else ERRORS[outcome.arg]


small = st.sampled_from([0.0, 0.25, 1.0, 3.0])
waits = st.one_of(
    st.just(("none",)),
    st.tuples(st.just("fixed"), small),
    st.tuples(st.just("exponential"), st.sampled_from([0.5, 1.0]), st.sampled_from([2.0, 8.0])),
    st.tuples(st.just("random"), small, st.sampled_from([3.0, 5.0])),
    st.tuples(st.just("random_exponential"), st.sampled_from([0.5, 1.0]), st.sampled_from([2.0, 8.0])),
    st.tuples(st.just("incrementing"), small, small),
    st.tuples(st.just("chain"), small, small),
    st.tuples(st.just("fixed_plus_random"), small, small, st.sampled_from([1.0, 2.0])),
)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    max_attempts = draw(st.sampled_from([3, 5, 2, 4, 6, None, 1]))
    max_delay = draw(st.sampled_from([10.0, 30.0, 4.0, 0.0] if max_attempts is None else [None, None, 10.0, 4.0, 1.0]))
    return Policy(
        max_attempts=max_attempts,
        max_delay=max_delay,
        wait=draw(waits),
        retry_types=draw(
            st.one_of(st.just((Exception,)), st.sets(st.sampled_from(FILTER_TYPES), min_size=1, max_size=3).map(tuple))
        ),
        retry_types_negated=draw(st.sampled_from([False, False, False, True])),
        rejected_values=frozenset(draw(st.sets(st.integers(0, len(ERRORS) - 1), max_size=4))),
        reraise=draw(st.booleans()),
        fallback=draw(st.booleans()),
        values_only=draw(st.sampled_from([False, False, False, True])),
        seed=draw(st.integers(0, 2**16)),
    )


# --- tenacity -------------------------------------------------------------------------------------------------------


def tenacity_wait(spec: tuple[Any, ...]) -> tenacity.wait.wait_base:
    kind, *args = spec
    if kind == "none":
        return tenacity.wait_none()
    if kind == "fixed":
        return tenacity.wait_fixed(args[0])
    if kind == "exponential":
        return tenacity.wait_exponential(multiplier=args[0], max=args[1])
    if kind == "random":
        return tenacity.wait_random(args[0], args[1])
    if kind == "random_exponential":
        return tenacity.wait_random_exponential(multiplier=args[0], max=args[1])
    if kind == "incrementing":
        return tenacity.wait_incrementing(start=args[0], increment=args[1])
    if kind == "chain":
        return tenacity.wait_chain(tenacity.wait_fixed(args[0]), tenacity.wait_fixed(args[1]))
    return tenacity.wait_fixed(args[0]) + tenacity.wait_random(args[1], args[2])


def tenacity_policy(policy: Policy, sleep: Callable[[float], Any]) -> dict[str, Any]:
    """`policy` as tenacity keyword arguments."""
    stops = []
    if policy.max_attempts is not None:
        stops.append(tenacity.stop_after_attempt(policy.max_attempts))
    if policy.max_delay is not None:
        stops.append(tenacity.stop_after_delay(policy.max_delay))
    on_error = (tenacity.retry_if_not_exception_type if policy.retry_types_negated else tenacity.retry_if_exception_type)(
        policy.retry_types
    )
    retry: Any = on_error
    if policy.rejected_values:
        retry = on_error | tenacity.retry_if_result(lambda value: value in policy.rejected_values)
    kwargs: dict[str, Any] = {
        "stop": tenacity.stop_any(*stops),
        "wait": tenacity_wait(policy.wait),
        "retry": retry,
        "reraise": policy.reraise,
        "sleep": sleep,
    }
    if policy.fallback:
        kwargs["retry_error_callback"] = lambda state: ("fallback", state.attempt_number)
    return kwargs


@dataclass
class Observed:
    """What the app observed of one run, and what the spans need to be checked against."""

    returned: Any
    escaped: BaseException | None
    script: Script
    sleeps: list[float]

    def comparable(self) -> tuple[Any, ...]:
        return (self.returned, describe(self.escaped, self.script.raised), self.script.calls, self.sleeps)


@dataclass
class World:
    """One run's fake time: the library's clock, the script of outcomes, and the sleeps the library asked for
    (recorded, and added to the clock, never slept)."""

    clock: Clock
    script: Script
    sleeps: list[float]

    @classmethod
    def new(cls, outcomes: list[Outcome]) -> World:
        clock = Clock()
        return cls(clock, Script(list(outcomes), clock), [])

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(float(seconds))
        self.clock.now += float(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def observe(self, call: Callable[[], Any]) -> Observed:
        returned: Any = None
        escaped: BaseException | None = None
        try:
            returned = call()
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt included: it is one of the outcomes
            escaped = exc
        return Observed(returned, escaped, self.script, self.sleeps)


Run = Callable[[], Observed]
"""A prepared run: calling it runs the policy against the script once."""


def prepare_tenacity(policy: Policy, outcomes: list[Outcome], form: str) -> Run:
    def run() -> Observed:
        world = World.new(outcomes)
        script = world.script
        with mock.patch.object(tenacity, "time", world.clock), mock.patch.object(
            tenacity.wait, "random", random.Random(policy.seed)
        ):
            if form == "call":
                return world.observe(lambda: decorated_call(policy, script, world.sleep))
            if form == "iterator":
                return world.observe(lambda: iterate(tenacity.Retrying(**tenacity_policy(policy, world.sleep)), script))
            if form == "async_call":
                return world.observe(lambda: asyncio.run(decorated_async_call(policy, script, world.async_sleep)))
            retrying = tenacity.AsyncRetrying(**tenacity_policy(policy, world.async_sleep))
            return world.observe(lambda: asyncio.run(async_iterate(retrying, script)))

    return run


def tenacity_wants_retry(policy: Policy, outcome: Outcome) -> bool:
    """tenacity's verdict on `outcome`: it sees every BaseException, so a negated filter retries KeyboardInterrupt."""
    if outcome.kind == "value":
        return outcome.arg in policy.rejected_values
    return policy.retries_error(error_type_of(outcome))


def decorated_call(policy: Policy, script: Script, sleep: Callable[[float], None]) -> Any:
    @tenacity.retry(**tenacity_policy(policy, sleep))
    def guarded() -> Any:
        return script.step()

    return guarded()


async def decorated_async_call(policy: Policy, script: Script, sleep: Callable[[float], Any]) -> Any:
    @tenacity.retry(**tenacity_policy(policy, sleep))
    async def guarded() -> Any:
        await asyncio.sleep(0)  # a real suspension point inside the attempt
        return script.step()

    return await guarded()


def iterate(retrying: tenacity.Retrying, script: Script) -> Any:
    value = None
    for attempt in retrying:
        with attempt:
            value = script.step()
        if attempt.retry_state.outcome is not None and not attempt.retry_state.outcome.failed:
            attempt.retry_state.set_result(value)
    return value


async def async_iterate(retrying: tenacity.AsyncRetrying, script: Script) -> Any:
    value = None
    async for attempt in retrying:
        with attempt:
            await asyncio.sleep(0)
            value = script.step()
        if attempt.retry_state.outcome is not None and not attempt.retry_state.outcome.failed:
            attempt.retry_state.set_result(value)
    return value


# --- backoff --------------------------------------------------------------------------------------------------------


def backoff_decorator(policy: Policy, rng: random.Random) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`policy` as a backoff decorator: ``on_predicate`` for `values_only` (errors then escape it),
    ``on_exception`` otherwise (a negated filter is ``giveup``); ``raise_on_giveup`` off when tenacity would not
    reraise. Random waits are jitter drawn from the policy's own generator."""
    kind, *args = policy.wait
    jitter: Callable[[float], float] | None = None
    wait_gen: Callable[..., Any] = backoff.constant
    wait_kwargs: dict[str, Any] = {"interval": 0}
    if kind == "fixed":
        wait_kwargs = {"interval": args[0]}
    elif kind in ("exponential", "random_exponential"):
        wait_gen, wait_kwargs = backoff.expo, {"factor": args[0], "max_value": args[1]}
    elif kind == "incrementing":
        wait_gen, wait_kwargs = backoff.fibo, {"max_value": 8}
    elif kind == "chain":
        wait_kwargs = {"interval": itertools.chain([args[0]], itertools.repeat(args[1]))}
    elif kind == "random":
        wait_kwargs = {"interval": args[1]}
    elif kind == "fixed_plus_random":
        wait_kwargs = {"interval": args[0]}
    if kind in ("random", "random_exponential"):
        jitter = lambda value: rng.uniform(0, value)  # noqa: E731 - backoff's full jitter, on our generator
    elif kind == "fixed_plus_random":
        jitter = lambda value: value + rng.uniform(args[1], args[2])  # noqa: E731
    stops = {"max_tries": policy.max_attempts, "max_time": policy.max_delay, "jitter": jitter, "logger": None}
    if policy.values_only:
        return backoff.on_predicate(wait_gen, lambda value: value in policy.rejected_values, **stops, **wait_kwargs)
    if policy.retry_types_negated:
        exceptions: tuple[type[Exception], ...] = (Exception,)
        giveup = lambda exc: isinstance(exc, policy.retry_types)  # noqa: E731
    else:
        exceptions, giveup = policy.retry_types, lambda exc: False
    return backoff.on_exception(
        wait_gen, exceptions, giveup=giveup, raise_on_giveup=policy.reraise, **stops, **wait_kwargs
    )


def prepare_backoff(policy: Policy, outcomes: list[Outcome], form: str) -> Run:
    world = World.new(outcomes)
    decorate = backoff_decorator(policy, random.Random(policy.seed))

    def guarded() -> Any:
        return world.script.step()

    async def async_guarded() -> Any:
        await asyncio.sleep(0)
        return world.script.step()

    decorated_before = decorate(guarded) if form == "before_call" else None
    fake_datetime = SimpleNamespace(datetime=world.clock.datetime_class())
    fake_asyncio = SimpleNamespace(iscoroutinefunction=asyncio.iscoroutinefunction, sleep=world.async_sleep)

    def run() -> Observed:
        with ExitStack() as patched:
            patched.enter_context(mock.patch.object(backoff._sync, "time", SimpleNamespace(sleep=world.sleep)))
            patched.enter_context(mock.patch.object(backoff._sync, "datetime", fake_datetime))
            patched.enter_context(mock.patch.object(backoff._async, "datetime", fake_datetime))
            patched.enter_context(mock.patch.object(backoff._async, "asyncio", fake_asyncio))
            if form == "async_call":
                target = decorate(async_guarded)
                return world.observe(lambda: asyncio.run(target()))
            return world.observe(decorated_before or decorate(guarded))

    return run


def backoff_gave_up_at_its_limits(policy: Policy, observed: Observed) -> bool:
    """backoff gives up on an error when its ``giveup`` says so *or* a limit is reached; where both hold at once the
    adapter says ``exhausted`` (it reads the limits, and never calls the app's predicate a second time)."""
    script = observed.script
    caught = not policy.values_only and policy.retry_types_negated
    last = script.outcome_of(script.calls - 1)
    if not caught or last.kind != "raise":
        return False
    elapsed = script.started_at[-1] - script.started_at[0]
    return script.calls == policy.max_attempts or (policy.max_delay is not None and elapsed >= policy.max_delay)


def backoff_wants_retry(policy: Policy, outcome: Outcome) -> bool:
    """backoff's verdict: ``on_predicate`` judges values only; ``on_exception`` catches Exceptions only."""
    if policy.values_only:
        return outcome.kind == "value" and outcome.arg in policy.rejected_values
    if outcome.kind != "raise":
        return False
    return policy.retries_error(ERRORS[outcome.arg])


# --- retrying -------------------------------------------------------------------------------------------------------


def ms(seconds: float) -> int:
    return int(seconds * 1000)


def retrying_kwargs(policy: Policy) -> dict[str, Any]:
    """`policy` as retrying's keyword arguments (times in milliseconds); random waits use ``wait_random_*`` and
    ``wait_jitter_max``; `reraise` off means ``wrap_exception``."""
    kind, *args = policy.wait
    kwargs: dict[str, Any] = {"wrap_exception": not policy.reraise}
    if policy.max_attempts is not None:
        kwargs["stop_max_attempt_number"] = policy.max_attempts
    if policy.max_delay is not None:
        kwargs["stop_max_delay"] = ms(policy.max_delay)
    if kind in ("fixed", "chain", "fixed_plus_random"):
        kwargs["wait_fixed"] = ms(args[0])
    elif kind in ("exponential", "random_exponential"):
        kwargs.update(wait_exponential_multiplier=ms(args[0]), wait_exponential_max=ms(args[1]))
    elif kind == "random":
        kwargs.update(wait_random_min=ms(args[0]), wait_random_max=ms(args[1]))
    elif kind == "incrementing":
        kwargs.update(wait_incrementing_start=ms(args[0]), wait_incrementing_increment=ms(args[1]))
    if kind in ("random_exponential", "fixed_plus_random"):
        kwargs["wait_jitter_max"] = ms(args[-1])
    types, negated = policy.retry_types, policy.retry_types_negated
    kwargs["retry_on_exception"] = lambda exc: not isinstance(exc, types) if negated else isinstance(exc, types)
    if policy.rejected_values:
        kwargs["retry_on_result"] = lambda value: value in policy.rejected_values
    return kwargs


def prepare_retrying(policy: Policy, outcomes: list[Outcome], form: str) -> Run:
    world = World.new(outcomes)
    decorate = retrying.retry(**retrying_kwargs(policy))

    def guarded() -> Any:
        return world.script.step()

    decorated_before = decorate(guarded) if form == "before_call" else None

    def run() -> Observed:
        fake_time = SimpleNamespace(time=world.clock.monotonic, sleep=world.sleep)
        with mock.patch.object(retrying, "time", fake_time), mock.patch.object(
            retrying, "random", random.Random(policy.seed)
        ):
            return world.observe(decorated_before or decorate(guarded))

    return run


def retrying_wants_retry(policy: Policy, outcome: Outcome) -> bool:
    """retrying's verdict: it catches Exceptions only (KeyboardInterrupt escapes whatever the filter)."""
    if outcome.kind == "value":
        return outcome.arg in policy.rejected_values
    return outcome.kind == "raise" and policy.retries_error(ERRORS[outcome.arg])


# --- stamina --------------------------------------------------------------------------------------------------------


def stamina_kwargs(policy: Policy) -> dict[str, Any]:
    """`policy` as stamina's arguments (its waits are exponential with jitter: each kind maps to initial, max, base
    and jitter); stamina always reraises and judges errors only."""
    kind, *args = policy.wait
    initial, maximum, base, jitter = 0.0, 0.0, 1.0, 0.0
    if kind == "fixed":
        initial = maximum = args[0]
    elif kind in ("exponential", "chain"):
        initial, maximum, base = max(args[0], 0.25), max(args[1], 1.0), 2.0
    elif kind == "random":
        initial, maximum, jitter = args[0], args[1], args[1] - args[0]
    elif kind == "random_exponential":
        initial, maximum, base, jitter = args[0], args[1], 2.0, 1.0
    elif kind == "incrementing":
        initial, maximum, base = max(args[0], 0.25), 8.0, 1.5
    elif kind == "fixed_plus_random":
        initial, maximum, jitter = args[0], args[0] + args[2], args[2]
    types = policy.retry_types
    on: Any = (lambda exc: not isinstance(exc, types)) if policy.retry_types_negated else types
    return {
        "on": on,
        "attempts": policy.max_attempts,
        "timeout": policy.max_delay or None,  # stamina warns that 0 means no retries: no time limit instead
        "wait_initial": initial,
        "wait_max": maximum,
        "wait_exp_base": base,
        "wait_jitter": jitter,
    }


def stamina_context(kwargs: dict[str, Any], script: Script) -> Any:
    for attempt in stamina.retry_context(**kwargs):
        with attempt:
            return script.step()
    return None


def prepare_stamina(policy: Policy, outcomes: list[Outcome], form: str) -> Run:
    world = World.new(outcomes)
    kwargs = stamina_kwargs(policy)

    def guarded() -> Any:
        return world.script.step()

    async def async_guarded() -> Any:
        await asyncio.sleep(0)
        return world.script.step()

    decorated_before = stamina.retry(**kwargs)(guarded) if form == "before_call" else None

    def run() -> Observed:
        with ExitStack() as patched:
            patched.enter_context(mock.patch.object(tenacity, "time", world.clock))
            patched.enter_context(mock.patch.object(tenacity.nap, "time", SimpleNamespace(sleep=world.sleep)))
            patched.enter_context(mock.patch.object(stamina._core, "_smart_sleep", world.async_sleep))
            patched.enter_context(mock.patch.object(stamina._core, "random", random.Random(policy.seed)))
            stamina.instrumentation.set_on_retry_hooks([])  # the app's hooks: none (no logging in the way)
            patched.callback(stamina.instrumentation.set_on_retry_hooks, None)
            if form == "context":
                return world.observe(lambda: stamina_context(kwargs, world.script))
            if form == "async_call":
                target = stamina.retry(**kwargs)(async_guarded)
                return world.observe(lambda: asyncio.run(target()))
            return world.observe(decorated_before or stamina.retry(**kwargs)(guarded))

    return run


def stamina_wants_retry(policy: Policy, outcome: Outcome) -> bool:
    """stamina's verdict: tenacity's on errors (a predicate sees KeyboardInterrupt too); values are never judged."""
    return outcome.kind != "value" and policy.retries_error(error_type_of(outcome))


# --- every retry library ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Driver:
    """How one library runs a policy, and what its spans must then say."""

    instrumentor: type[BaseInstrumentor]
    prepare: Callable[[Policy, list[Outcome], str], Run]
    span_names: dict[str, str]
    """Form → the attempt spans' name. Forms named ``before_*`` decorate before instrumentation."""
    wants_retry: Callable[[Policy, Outcome], bool]
    exact_delays: Callable[[Policy], bool] = lambda policy: True
    spans_when_decorated_before: bool = True
    """False where decorating before instrumentation is documented to give partial spans (backoff)."""
    gave_up_at_limits: Callable[[Policy, Observed], bool] = lambda policy, observed: False
    """Where an error the policy does not retry came when a limit was reached too, and the library does not say
    which made it stop: ``exhausted``."""


DRIVERS = {
    "tenacity": Driver(
        TenacityInstrumentor,
        prepare_tenacity,
        {
            "call": "decorated_call.<locals>.guarded",
            "iterator": "iterate",
            "async_call": "decorated_async_call.<locals>.guarded",
            "async_iterator": "async_iterate",
        },
        tenacity_wants_retry,
    ),
    "backoff": Driver(
        BackoffInstrumentor,
        prepare_backoff,
        {
            "call": "prepare_backoff.<locals>.guarded",
            "async_call": "prepare_backoff.<locals>.async_guarded",
            "before_call": "prepare_backoff.<locals>.guarded",
        },
        backoff_wants_retry,
        spans_when_decorated_before=False,
        gave_up_at_limits=backoff_gave_up_at_its_limits,
    ),
    "stamina": Driver(
        StaminaInstrumentor,
        prepare_stamina,
        {
            "call": "prepare_stamina.<locals>.guarded",
            "async_call": "prepare_stamina.<locals>.async_guarded",
            "context": "stamina_context",
            "before_call": "prepare_stamina.<locals>.guarded",
        },
        stamina_wants_retry,
    ),
    "retrying": Driver(
        RetryingInstrumentor,
        prepare_retrying,
        {"call": "prepare_retrying.<locals>.guarded", "before_call": "prepare_retrying.<locals>.guarded"},
        retrying_wants_retry,
        exact_delays=lambda policy: policy.wait[0] not in ("random_exponential", "fixed_plus_random"),
    ),
}
CASES = [(library, form) for library, driver in DRIVERS.items() for form in driver.span_names]


# --- what the spans must say ------------------------------------------------------------------------------------------


def expected_result(driver: Driver, policy: Policy, observed: Observed) -> str:
    """The contract's `retry.result` for what happened: aborted when a BaseException that is not an Exception
    escaped; else decided by the last attempt: the policy wanted another (the stop ended it), the policy does not
    retry its error, or it was accepted."""
    if observed.escaped is not None and not isinstance(observed.escaped, Exception):
        return semconv.RESULT_ABORTED
    last = observed.script.outcome_of(observed.script.calls - 1)
    if driver.wants_retry(policy, last) or driver.gave_up_at_limits(policy, observed):
        return semconv.RESULT_EXHAUSTED
    if last.kind != "value":
        return semconv.RESULT_NOT_RETRIED
    return semconv.RESULT_SUCCESS


def expected_attempt_error(driver: Driver, policy: Policy, script: Script, index: int) -> str | None:
    outcome = script.outcome_of(index)
    if outcome.kind == "value":
        return semconv.REJECTED_RESULT if driver.wants_retry(policy, outcome) else None
    return error_type(script.raised_by_attempt[index])


def check_spans(
    otel: Otel, driver: Driver, policy: Policy, observed: Observed, caller: ReadableSpan, span_name: str, module: str
) -> None:
    spans = otel.spans()
    (op,) = children(spans, caller)
    assert op.name == f"{semconv.RETRY_OPERATION_SPAN_PREFIX} {span_name}"
    attempts = children(spans, op)
    calls = observed.script.calls
    assert len(spans) == calls + 2  # caller, operation, one span per attempt: nothing else
    assert [a.name for a in attempts] == [span_name] * calls
    assert [a.attributes[semconv.RETRY_ATTEMPT] for a in attempts] == list(range(1, calls + 1))
    # Each attempt's span was the current span while the guarded code ran.
    assert [a.context.span_id for a in attempts] == observed.script.current_spans
    delays = [a.attributes.get(semconv.RETRY_DELAY) for a in attempts]
    if driver.exact_delays(policy):  # the waits on the spans are exactly the waits the library slept
        assert delays == [*observed.sleeps, None]
    else:  # jitter added inline where it cannot be read: the gap is measured (no real time passes here)
        assert [type(d) for d in delays] == [float] * len(observed.sleeps) + [type(None)]
    name = f"{module}.{span_name}"
    for index, attempt in enumerate(attempts):
        assert attempt.attributes[semconv.RETRY_NAME] == name
        error = expected_attempt_error(driver, policy, observed.script, index)
        assert attempt.attributes.get(semconv.ERROR_TYPE) == error
        assert attempt.status.status_code is (StatusCode.ERROR if error is not None else StatusCode.UNSET)
        exception_events = [e for e in attempt.events if e.name == semconv.EXCEPTION_EVENT]
        assert len(exception_events) == (1 if error not in (None, semconv.REJECTED_RESULT) else 0)

    result = expected_result(driver, policy, observed)
    attributes = dict(op.attributes)
    assert attributes.pop(semconv.RETRY_NAME) == name
    assert attributes.pop(semconv.RETRY_DEPTH) == 1
    assert attributes.pop(semconv.RETRY_ATTEMPTS) == calls
    assert attributes.pop(semconv.RETRY_RESULT) == result
    total_delay = attributes.pop(semconv.RETRY_TOTAL_DELAY)
    assert type(total_delay) is float
    if driver.exact_delays(policy):
        assert total_delay == sum(observed.sleeps)
    if policy.max_attempts is not None:
        assert attributes.pop(semconv.RETRY_MAX_ATTEMPTS) == policy.max_attempts
    if result == semconv.RESULT_SUCCESS:
        assert op.status.status_code is StatusCode.UNSET
        assert attributes == {}
    else:
        assert op.status.status_code is StatusCode.ERROR
        last_error = attempts[-1].attributes.get(semconv.ERROR_TYPE)
        escaped = observed.escaped
        assert attributes == {semconv.ERROR_TYPE: error_type(escaped) if escaped is not None else last_error}
    assert point_counts(otel, semconv.METRIC_RETRY_ATTEMPTS, semconv.RETRY_NAME, semconv.RETRY_RESULT, semconv.RETRY_DEPTH) == {
        (name, result, 1): 1
    }
    (point,) = otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS)
    assert point.sum == calls


@pytest.mark.parametrize("library,form", CASES)
@PROPERTY_SETTINGS
@given(policy=policies(), script=outcomes)
def test_retry_library_behaves_identically_and_spans_tell_what_happened(
    library: str, form: str, policy: Policy, script: list[Outcome]
) -> None:
    driver = DRIVERS[library]
    bare = driver.prepare(policy, script, form)()
    assert bare.script.calls >= 1, bare.escaped  # the run itself worked: the policy made its attempts
    event(f"result={expected_result(driver, policy, bare)}")
    event(f"attempts={min(bare.script.calls, 4)}{'+' if bare.script.calls >= 4 else ''}")
    decorated_before = driver.prepare(policy, script, form) if form.startswith("before_") else None
    with instrumented(driver.instrumentor) as otel:
        caller_tracer = otel.tracer_provider.get_tracer("test")
        with caller_tracer.start_as_current_span("caller"):
            traced = (decorated_before or driver.prepare(policy, script, form))()
    assert traced.comparable() == bare.comparable()
    if decorated_before is None or driver.spans_when_decorated_before:
        check_spans(otel, driver, policy, traced, otel.span("caller"), driver.span_names[form], __name__)
