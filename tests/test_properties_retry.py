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
import random
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import tenacity
import tenacity.wait
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_resilience import semconv
from otel_resilience.core.errors import error_type
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from tests.conftest import Otel
from tests.evidence import PROPERTY_SETTINGS, children, describe, instrumented, point_counts


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
    """The library's monotonic clock, advanced only by attempts and sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@dataclass
class Script:
    """The guarded code: plays its outcomes in order, then returns FINAL."""

    outcomes: list[Outcome]
    clock: Clock
    calls: int = 0
    raised: list[BaseException] = field(default_factory=list)
    raised_by_attempt: dict[int, BaseException] = field(default_factory=dict)
    current_spans: list[int] = field(default_factory=list)

    def step(self) -> Any:
        index = self.calls
        self.calls += 1
        self.current_spans.append(trace.get_current_span().get_span_context().span_id)
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
    seed: int

    def retries_error(self, exc_type: type[BaseException]) -> bool:
        matches = issubclass(exc_type, self.retry_types)
        return not matches if self.retry_types_negated else matches

    def wants_retry(self, outcome: Outcome) -> bool:
        """Whether the policy asks for another attempt after `outcome` (a model of the policy, for the spans)."""
        if outcome.kind == "value":
            return outcome.arg in self.rejected_values
        exc_type = KeyboardInterrupt if outcome.kind == "interrupt" else ERRORS[outcome.arg]
        return self.retries_error(exc_type)


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


@contextmanager
def tenacity_world(policy: Policy, clock: Clock) -> Iterator[None]:
    """tenacity's clock and its random waits under the test's control for one run."""
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(tenacity, "time", clock))
        stack.enter_context(mock.patch.object(tenacity.wait, "random", random.Random(policy.seed)))
        yield


@dataclass
class Observed:
    """What the app observed of one run, and what the spans need to be checked against."""

    returned: Any
    escaped: BaseException | None
    script: Script
    sleeps: list[float]

    def comparable(self) -> tuple[Any, ...]:
        return (self.returned, describe(self.escaped, self.script.raised), self.script.calls, self.sleeps)


def run_tenacity(policy: Policy, script_outcomes: list[Outcome], form: str) -> Observed:
    clock = Clock()
    script = Script(list(script_outcomes), clock)
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(float(seconds))
        clock.now += float(seconds)

    async def async_sleep(seconds: float) -> None:
        sleep(seconds)

    returned: Any = None
    escaped: BaseException | None = None
    with tenacity_world(policy, clock):
        try:
            if form == "call":
                returned = decorated_call(policy, script, sleep)
            elif form == "iterator":
                returned = iterate(tenacity.Retrying(**tenacity_policy(policy, sleep)), script)
            elif form == "async_call":
                returned = asyncio.run(decorated_async_call(policy, script, async_sleep))
            else:
                returned = asyncio.run(async_iterate(tenacity.AsyncRetrying(**tenacity_policy(policy, async_sleep)), script))
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt included: it is one of the outcomes
            escaped = exc
    return Observed(returned, escaped, script, sleeps)


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


SPAN_NAMES = {
    "call": "decorated_call.<locals>.guarded",
    "iterator": "iterate",
    "async_call": "decorated_async_call.<locals>.guarded",
    "async_iterator": "async_iterate",
}
FORMS = tuple(SPAN_NAMES)


# --- what the spans must say ------------------------------------------------------------------------------------------


def expected_result(policy: Policy, observed: Observed) -> str:
    """The contract's `retry.result` for what happened: aborted when a BaseException that is not an Exception
    escaped; else decided by the last attempt: the policy wanted another (the stop ended it), the policy does not
    retry its error, or it was accepted."""
    if observed.escaped is not None and not isinstance(observed.escaped, Exception):
        return semconv.RESULT_ABORTED
    last = observed.script.outcome_of(observed.script.calls - 1)
    if policy.wants_retry(last):
        return semconv.RESULT_EXHAUSTED
    if last.kind != "value":
        return semconv.RESULT_NOT_RETRIED
    return semconv.RESULT_SUCCESS


def expected_attempt_error(policy: Policy, script: Script, index: int) -> str | None:
    outcome = script.outcome_of(index)
    if outcome.kind == "value":
        return semconv.REJECTED_RESULT if policy.wants_retry(outcome) else None
    return error_type(script.raised_by_attempt[index])


def check_spans(otel: Otel, policy: Policy, observed: Observed, caller: ReadableSpan, span_name: str, module: str) -> None:
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
    # The waits on the spans are exactly the waits the library slept.
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [*observed.sleeps, None]
    name = f"{module}.{span_name}"
    for index, attempt in enumerate(attempts):
        assert attempt.attributes[semconv.RETRY_NAME] == name
        error = expected_attempt_error(policy, observed.script, index)
        assert attempt.attributes.get(semconv.ERROR_TYPE) == error
        assert attempt.status.status_code is (StatusCode.ERROR if error is not None else StatusCode.UNSET)
        exception_events = [e for e in attempt.events if e.name == semconv.EXCEPTION_EVENT]
        assert len(exception_events) == (1 if error not in (None, semconv.REJECTED_RESULT) else 0)

    result = expected_result(policy, observed)
    attributes = dict(op.attributes)
    assert attributes.pop(semconv.RETRY_NAME) == name
    assert attributes.pop(semconv.RETRY_DEPTH) == 1
    assert attributes.pop(semconv.RETRY_ATTEMPTS) == calls
    assert attributes.pop(semconv.RETRY_RESULT) == result
    total_delay = attributes.pop(semconv.RETRY_TOTAL_DELAY)
    assert type(total_delay) is float and total_delay == sum(observed.sleeps)
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


@pytest.mark.parametrize("form", FORMS)
@PROPERTY_SETTINGS
@given(policy=policies(), script=outcomes)
def test_tenacity_behaves_identically_and_spans_tell_what_happened(
    form: str, policy: Policy, script: list[Outcome]
) -> None:
    bare = run_tenacity(policy, script, form)
    event(f"result={expected_result(policy, bare)}")
    event(f"attempts={min(bare.script.calls, 4)}{'+' if bare.script.calls >= 4 else ''}")
    with instrumented(TenacityInstrumentor) as otel:
        caller_tracer = otel.tracer_provider.get_tracer("test")
        with caller_tracer.start_as_current_span("caller"):
            traced = run_tenacity(policy, script, form)
    assert traced.comparable() == bare.comparable()
    check_spans(otel, policy, traced, otel.span("caller"), SPAN_NAMES[form], __name__)
