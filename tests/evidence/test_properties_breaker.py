"""Zero behaviour change for circuit breakers, shown over random configurations and random call sequences.

Each example drives one randomly configured breaker through a random sequence of steps (a call that returns, a call
that raises a counted or an excluded error, a KeyboardInterrupt, the clock moving on) twice: bare, then
instrumented. Every call's outcome (the value, the very exception object or the breaker's own error), whether the
guarded function ran, and the breaker's state, counters and notified transitions after each step must be identical.
Then the spans must tell what happened: one span per call, under that call's own caller span, `rejected` exactly when
the function did not run, the state it was admitted or refused in, the transitions it caused as events, and metric
points that add up.

The library's clock is patched, so timeouts elapse without sleeping.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any
from unittest import mock

import aiobreaker
import aiobreaker.circuitbreaker
import aiobreaker.state
import circuitbreaker
import purgatory
import purgatory.domain.model
import pybreaker
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.trace import StatusCode

from otel_resilience import semconv
from otel_resilience.core.breaker import normalise_state
from otel_resilience.core.errors import error_type
from otel_resilience.instrumentation.aiobreaker import AioBreakerInstrumentor
from otel_resilience.instrumentation.circuitbreaker import CircuitBreakerInstrumentor
from otel_resilience.instrumentation.purgatory import PurgatoryInstrumentor
from otel_resilience.instrumentation.pybreaker import PyBreakerInstrumentor
from tests.conftest import Otel
from tests.support.evidence import (
    PROPERTY_SETTINGS,
    TickingClock,
    children,
    describe,
    forget_circuitbreaker,
    instrumented,
    point_counts,
)


class Business(Exception):
    """An error the breaker may be configured to exclude (not a sign the dependency is down)."""


ERRORS: tuple[type[Exception], ...] = (ConnectionError, TimeoutError, Business, ValueError)

# --- steps ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    kind: str  # "value", "raise", "interrupt", "advance"
    arg: int  # value returned, index in ERRORS, or seconds the clock moves on


single_steps = st.one_of(
    st.builds(Step, kind=st.just("value"), arg=st.integers(0, 9)),
    st.builds(Step, kind=st.just("raise"), arg=st.integers(0, len(ERRORS) - 1)),
    st.builds(Step, kind=st.just("interrupt"), arg=st.just(0)),
    st.builds(Step, kind=st.just("advance"), arg=st.sampled_from([61, 5, 20])),
)
burst = st.integers(0, 1).map(lambda error: [Step("raise", error)] * 4)  # trips any breaker configured here
tripped_and_waited = burst.map(lambda chunk: [*chunk, Step("advance", 61)])  # the next call is a probe
steps = st.lists(
    st.one_of(single_steps.map(lambda step: [step]), burst, tripped_and_waited), min_size=1, max_size=12
).map(
    lambda chunks: [step for chunk in chunks for step in chunk]
)


@dataclass(frozen=True)
class Config:
    fail_max: int
    reset_timeout: int
    success_threshold: int
    excluded: tuple[type[Exception], ...]
    exclude_by_predicate: bool  # also exclude errors whose message says "soft"
    throw_new_error_on_trip: bool
    named: bool
    form: str  # how the app calls through the breaker


configs = st.builds(
    Config,
    fail_max=st.integers(1, 4),
    reset_timeout=st.sampled_from([10, 60]),
    success_threshold=st.integers(1, 3),
    excluded=st.sets(st.sampled_from([Business, ValueError])).map(tuple),
    exclude_by_predicate=st.booleans(),
    throw_new_error_on_trip=st.booleans(),
    named=st.booleans(),
    form=st.just("call"),
)
FORMS = ("call", "decorator", "calling")


@dataclass
class CallRecord:
    """What one call through the breaker did, as the app and the breaker's own listeners saw it."""

    outcome: Any
    ran: bool
    state_after: str
    fail_counter: int
    success_counter: int
    transitions: list[tuple[str, str]]
    state_before: str
    span_id: int | None = None  # the current span while the guarded function ran


@dataclass
class Run:
    records: list[CallRecord] = field(default_factory=list)
    raised: list[BaseException] = field(default_factory=list)
    escaped: list[BaseException | None] = field(default_factory=list)
    counted: list[bool] = field(default_factory=list)  # the library counted the call's error as a failure
    described: list[Any] = field(default_factory=list)  # each escaped error as the app saw it, while it was current

    def comparable(self) -> list[tuple[Any, ...]]:
        described = self.described or [describe(e, self.raised) for e in self.escaped]
        return [
            (d, r.outcome, r.ran, r.state_after, r.fail_counter, r.success_counter, r.transitions)
            for r, d in zip(self.records, described, strict=True)
        ]


class Transitions(pybreaker.CircuitBreakerListener):
    """The breaker's own account of its state changes: the ground truth the spans are compared with."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        if old_state is not None:
            self.seen.append((old_state.name, new_state.name))


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2024, 1, 1, tzinfo=timezone.utc)

    def datetime_class(self) -> type[datetime]:
        clock = self

        class FakeDatetime(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
                return clock.now

        return FakeDatetime


def soft(exc: BaseException) -> bool:
    return "soft" in str(exc)


def contract_state(pybreaker_state: str) -> str:
    return pybreaker_state.replace("-", "_")


def run_pybreaker(config: Config, script: list[Step], tracer: trace.Tracer | None = None) -> Run:
    clock = Clock()
    listener = Transitions()
    exclude: list[Any] = list(config.excluded)
    if config.exclude_by_predicate:
        exclude.append(soft)
    breaker = pybreaker.CircuitBreaker(
        fail_max=config.fail_max,
        reset_timeout=config.reset_timeout,
        success_threshold=config.success_threshold,
        exclude=exclude,
        listeners=[listener],
        name="payments" if config.named else None,
        throw_new_error_on_trip=config.throw_new_error_on_trip,
    )
    run = Run()
    with mock.patch.object(pybreaker, "datetime", clock.datetime_class()):
        for index, step in enumerate(script):
            if step.kind == "advance":
                clock.now += timedelta(seconds=step.arg)
                continue
            record = CallRecord(None, False, "", 0, 0, [], breaker._state.name)
            seen_before = len(listener.seen)

            def charge() -> Any:
                record.ran = True
                record.span_id = trace.get_current_span().get_span_context().span_id
                if step.kind == "value":
                    return step.arg
                exc: BaseException = (
                    KeyboardInterrupt(f"interrupt {index}")
                    if step.kind == "interrupt"
                    else ERRORS[step.arg](f"{'soft' if index % 2 else 'hard'} failure {index}")
                )
                run.raised.append(exc)
                raise exc

            escaped: BaseException | None = None
            with caller_span(tracer, index):
                try:
                    record.outcome = through(breaker, charge, config.form)
                except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt included: it is one of the steps
                    escaped = exc
            record.state_after = breaker._state.name
            record.fail_counter = breaker.fail_counter
            record.success_counter = breaker.success_counter
            record.transitions = listener.seen[seen_before:]
            run.records.append(record)
            run.escaped.append(escaped)
    return run


def through(breaker: pybreaker.CircuitBreaker, fn: Callable[[], Any], form: str) -> Any:
    if form == "call":
        return breaker.call(fn)
    if form == "decorator":
        return breaker(fn)()
    with breaker.calling():
        return fn()


@contextmanager
def caller_span(tracer: trace.Tracer | None, index: int) -> Iterator[None]:
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span(f"step {index}"):
        yield


def check_spans(otel: Otel, config: Config, run: Run) -> None:
    spans = otel.spans()
    callers = {s.name: s for s in spans if s.name.startswith("step ")}
    if config.named:
        breaker_name = "payments"
    else:  # the first guarded function; for `with breaker.calling():`, the function the block is written in
        breaker_name = f"{__name__}.{'through' if config.form == 'calling' else 'run_pybreaker.<locals>.charge'}"
    calls: Counter[tuple[str, str, str]] = Counter()
    transitions: Counter[tuple[str, str, str]] = Counter()
    assert len(spans) == 2 * len(run.records)  # a caller span and one breaker span per call: nothing else
    for record, escaped, caller in zip(run.records, run.escaped, sorted(callers.values(), key=lambda s: s.start_time or 0)):
        (span,) = children(spans, caller)
        assert span.name == f"{semconv.BREAKER_SPAN_PREFIX} {breaker_name}"
        attributes = dict(span.attributes)
        before = contract_state(record.state_before)
        if not record.ran:
            result, state = semconv.CALL_REJECTED, semconv.STATE_OPEN
        else:
            assert record.span_id == span.context.span_id  # the call's span was current while the function ran
            probe = before == semconv.STATE_OPEN
            state = semconv.STATE_HALF_OPEN if probe else before
            if escaped is None:
                result = semconv.CALL_SUCCESS
            elif excluded(config, _guarded_error(escaped, run.raised)):
                result = semconv.CALL_IGNORED
            else:
                result = semconv.CALL_FAILURE
        assert attributes.pop(semconv.BREAKER_NAME) == breaker_name
        assert attributes.pop(semconv.BREAKER_STATE) == state
        assert attributes.pop(semconv.BREAKER_RESULT) == result
        assert attributes.pop(semconv.BREAKER_FAILURE_COUNT) == record.fail_counter
        if result in (semconv.CALL_FAILURE, semconv.CALL_REJECTED):
            assert escaped is not None
            assert attributes == {semconv.ERROR_TYPE: error_type(escaped)}
            assert span.status.status_code is StatusCode.ERROR
        else:
            assert attributes == {}
            assert span.status.status_code is StatusCode.UNSET
        changes = [
            (e.attributes[semconv.BREAKER_PREVIOUS_STATE], e.attributes[semconv.BREAKER_STATE])
            for e in span.events
            if e.name == semconv.BREAKER_STATE_CHANGE_EVENT
        ]
        assert changes == [(contract_state(a), contract_state(b)) for a, b in record.transitions]
        calls[(breaker_name, state, result)] += 1
        for a, b in record.transitions:
            transitions[(breaker_name, contract_state(a), contract_state(b))] += 1
        event(f"{result} in {state}")
    assert point_counts(otel, semconv.METRIC_BREAKER_CALLS, semconv.BREAKER_NAME, semconv.BREAKER_STATE, semconv.BREAKER_RESULT) == calls
    assert point_counts(
        otel, semconv.METRIC_BREAKER_TRANSITIONS, semconv.BREAKER_NAME, semconv.BREAKER_PREVIOUS_STATE, semconv.BREAKER_STATE
    ) == transitions


def _guarded_error(escaped: BaseException, raised: list[BaseException]) -> BaseException:
    """The error the guarded function raised in this call: the escaped one, or the one a trip error was raised
    during (pybreaker raises CircuitBreakerError while handling the function's error)."""
    if any(escaped is r for r in raised):
        return escaped
    context = escaped.__context__
    assert context is not None and any(context is r for r in raised)
    return context


def excluded(config: Config, exc: BaseException) -> bool:
    return isinstance(exc, config.excluded) or (config.exclude_by_predicate and soft(exc))


@pytest.mark.parametrize("form", FORMS)
@PROPERTY_SETTINGS
@given(config=configs, script=steps)
def test_pybreaker_behaves_identically_and_spans_tell_what_happened(form: str, config: Config, script: list[Step]) -> None:
    config = replace(config, form=form)
    bare = run_pybreaker(config, script)
    with instrumented(PyBreakerInstrumentor) as otel:
        traced = run_pybreaker(config, script, otel.tracer_provider.get_tracer("test"))
    assert traced.comparable() == bare.comparable()
    check_spans(otel, config, traced)


# --- every other breaker library ---------------------------------------------------------------------------------------
#
# circuitbreaker, aiobreaker and purgatory are driven through one loop. Their own accounts of state changes differ
# (aiobreaker and purgatory notify, circuitbreaker derives half_open from its clock), so the spans are checked against
# what every one of them shows: the state each call found and left, as the library resolves it, side-effect free.


@dataclass(frozen=True)
class Settings:
    fail_max: int
    reset_timeout: int
    excluded: tuple[type[Exception], ...]


settings_strategy = st.builds(
    Settings,
    fail_max=st.integers(1, 4),
    reset_timeout=st.sampled_from([10, 60]),
    excluded=st.sets(st.sampled_from([Business, ValueError])).map(tuple),
)


@dataclass
class Guard:
    """One breaker of a library, as the loop uses it."""

    call: Callable[[int], Any]  # guarded call of the step's index (a coroutine for async forms)
    state: Callable[[], str]  # the contract state, as the library has resolved it (no side effects)
    failure_count: Callable[[], int | None]
    counted: Callable[[BaseException], bool]  # whether the library counts this error as a failure
    close: Callable[[], None] = lambda: None  # what the library keeps of the breaker for the process: dropped


@dataclass(frozen=True)
class BreakerDriver:
    instrumentor: type[BaseInstrumentor]
    build: Callable[[Settings, str, Callable[[int], Any]], Guard]
    """(settings, form, the guarded function of a step index) → the guard."""
    forms: tuple[str, ...]
    clock_patches: Callable[[TickingClock], list[tuple[Any, str, Any]]]
    is_async: Callable[[str], bool]


def build_circuitbreaker(settings: Settings, form: str, fn: Callable[[int], Any]) -> Guard:
    counted = tuple(e for e in ERRORS if e not in settings.excluded)
    breaker = circuitbreaker.CircuitBreaker(
        failure_threshold=settings.fail_max, recovery_timeout=settings.reset_timeout, expected_exception=counted,
        name="payments",
    )
    return Guard(
        breaker(fn),
        lambda: normalise_state(breaker.state) or "",
        lambda: breaker.failure_count,
        lambda exc: isinstance(exc, counted),
        lambda: forget_circuitbreaker("payments"),
    )


def build_aiobreaker(settings: Settings, form: str, fn: Callable[[int], Any]) -> Guard:
    breaker = aiobreaker.CircuitBreaker(
        fail_max=settings.fail_max, timeout_duration=timedelta(seconds=settings.reset_timeout),
        exclude=list(settings.excluded), name="payments",
    )
    call = breaker(fn) if form == "decorator" else (lambda index: breaker.call_async(fn, index))
    return Guard(
        call,
        lambda: normalise_state(breaker.current_state) or "",
        lambda: breaker.fail_counter,
        lambda exc: isinstance(exc, Exception) and not isinstance(exc, settings.excluded),
    )


def build_purgatory(settings: Settings, form: str, fn: Callable[[int], Any]) -> Guard:
    kwargs = {"default_threshold": settings.fail_max, "default_ttl": settings.reset_timeout,
              "exclude": list(settings.excluded)}
    factory: Any
    if form == "async_decorator":
        factory = purgatory.AsyncCircuitBreakerFactory(**kwargs)
        call = factory("payments")(fn)
    else:
        factory = purgatory.SyncCircuitBreakerFactory(**kwargs)
        call = factory("payments")(fn)
        if form == "context":

            def call(index: int) -> Any:
                with factory.get_breaker("payments"):
                    return fn(index)

    def context() -> Any:
        return factory.uow.contexts.breakers.get("payments")

    return Guard(
        call,
        lambda: normalise_state(context().state) if context() is not None else semconv.STATE_CLOSED,
        lambda: context().failure_count if context() is not None else 0,
        lambda exc: not isinstance(exc, settings.excluded),
    )


BREAKERS = {
    "circuitbreaker": BreakerDriver(
        CircuitBreakerInstrumentor,
        build_circuitbreaker,
        ("decorator", "async_decorator"),
        lambda clock: [(circuitbreaker, "monotonic", clock.seconds), (circuitbreaker, "datetime", clock.datetime_class())],
        lambda form: form.startswith("async"),
    ),
    "aiobreaker": BreakerDriver(
        AioBreakerInstrumentor,
        build_aiobreaker,
        ("call_async", "decorator"),
        lambda clock: [
            (aiobreaker.circuitbreaker, "datetime", clock.datetime_class()),
            (aiobreaker.state, "datetime", clock.datetime_class()),
        ],
        lambda form: True,
    ),
    "purgatory": BreakerDriver(
        PurgatoryInstrumentor,
        build_purgatory,
        ("decorator", "context", "async_decorator"),
        lambda clock: [(purgatory.domain.model, "time", SimpleNamespace(time=clock.seconds))],
        lambda form: form.startswith("async"),
    ),
}
BREAKER_CASES = [(library, form) for library, driver in BREAKERS.items() for form in driver.forms]


def run_breaker(driver: BreakerDriver, settings: Settings, form: str, script: list[Step], tracer: trace.Tracer | None = None) -> Run:
    """The script through a fresh breaker, in one event loop (sync libraries are simply called from it)."""
    clock = TickingClock()
    run = Run()
    is_async = driver.is_async(form)

    def outcome_of(index: int, record: CallRecord) -> Any:
        record.ran = True
        record.span_id = trace.get_current_span().get_span_context().span_id
        step = script[index]
        if step.kind == "value":
            return step.arg
        exc: BaseException = (
            KeyboardInterrupt(f"interrupt {index}") if step.kind == "interrupt" else ERRORS[step.arg](f"failure {index}")
        )
        run.raised.append(exc)
        raise exc

    records: dict[int, CallRecord] = {}

    def charge(index: int) -> Any:
        return outcome_of(index, records[index])

    async def async_charge(index: int) -> Any:
        await asyncio.sleep(0)
        return outcome_of(index, records[index])

    async def loop() -> None:
        guard = driver.build(settings, form, async_charge if is_async else charge)
        try:
            await steps_through(guard)
        finally:
            guard.close()

    async def steps_through(guard: Guard) -> None:
        for index, step in enumerate(script):
            if step.kind == "advance":
                clock.advance(step.arg)
                continue
            record = records[index] = CallRecord(None, False, "", 0, 0, [], guard.state())
            escaped: BaseException | None = None
            with caller_span(tracer, index):
                try:
                    result = guard.call(index)
                    record.outcome = await result if is_async else result
                except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt included: it is one of the steps
                    escaped = exc
            record.state_after = guard.state()
            record.fail_counter = guard.failure_count() or 0
            run.records.append(record)
            run.escaped.append(escaped)
            run.counted.append(escaped is not None and record.ran and guard.counted(_guarded_error(escaped, run.raised)))
            run.described.append(describe(escaped, run.raised))  # messages read the library's clock when formatted

    with ExitStack() as patched:
        for owner, name, value in driver.clock_patches(clock):
            patched.enter_context(mock.patch.object(owner, name, value))
        asyncio.run(loop())
    return run


def check_breaker_spans(otel: Otel, run: Run) -> None:
    """Each call's span against what the library showed: one span per call under its own caller, rejected exactly
    when the function did not run, the state it was admitted or refused in, and state-change events that carry the
    breaker from the state the previous call left to the state this one left."""
    spans = otel.spans()
    callers = sorted((s for s in spans if s.name.startswith("step ")), key=lambda s: s.start_time or 0)
    assert len(callers) == len(run.records) and len(spans) == 2 * len(run.records)
    calls: Counter[tuple[str, str]] = Counter()
    events = 0
    known = semconv.STATE_CLOSED
    for record, escaped, counted, caller in zip(run.records, run.escaped, run.counted, callers):
        (span,) = children(spans, caller)
        assert span.name == f"{semconv.BREAKER_SPAN_PREFIX} payments"
        result = span.attributes[semconv.BREAKER_RESULT]
        state = span.attributes[semconv.BREAKER_STATE]
        if not record.ran:
            assert (result, state) == (semconv.CALL_REJECTED, semconv.STATE_OPEN)
        else:
            assert record.span_id == span.context.span_id  # the call's span was current while the function ran
            probe = record.state_before in (semconv.STATE_OPEN, semconv.STATE_HALF_OPEN)
            assert state == (semconv.STATE_HALF_OPEN if probe else semconv.STATE_CLOSED)
            expected = semconv.CALL_SUCCESS if escaped is None else semconv.CALL_FAILURE if counted else semconv.CALL_IGNORED
            assert result == expected
        if result in (semconv.CALL_FAILURE, semconv.CALL_REJECTED):
            assert escaped is not None and span.attributes[semconv.ERROR_TYPE] == error_type(escaped)
            assert span.status.status_code is StatusCode.ERROR
        else:
            assert semconv.ERROR_TYPE not in span.attributes and span.status.status_code is StatusCode.UNSET
        if semconv.BREAKER_FAILURE_COUNT in span.attributes:
            assert span.attributes[semconv.BREAKER_FAILURE_COUNT] == record.fail_counter
        for change in span.events:
            if change.name != semconv.BREAKER_STATE_CHANGE_EVENT:
                continue
            previous, new = change.attributes[semconv.BREAKER_PREVIOUS_STATE], change.attributes[semconv.BREAKER_STATE]
            assert previous == known and new != previous
            known = new
            events += 1
        assert known == record.state_after  # the events carried the breaker to the state this call left
        calls[(state, result)] += 1
        event(f"{result} in {state}")
    assert point_counts(otel, semconv.METRIC_BREAKER_CALLS, semconv.BREAKER_STATE, semconv.BREAKER_RESULT) == calls
    transitions = sum(p.value for p in otel.metric_points(semconv.METRIC_BREAKER_TRANSITIONS))
    assert transitions in (events, events + 1)  # + a timer's open -> half_open first seen by the state gauge


@pytest.mark.parametrize("library,form", BREAKER_CASES)
@PROPERTY_SETTINGS
@given(settings=settings_strategy, script=steps)
def test_breaker_library_behaves_identically_and_spans_tell_what_happened(
    library: str, form: str, settings: Settings, script: list[Step]
) -> None:
    driver = BREAKERS[library]
    bare = run_breaker(driver, settings, form, script)
    with instrumented(driver.instrumentor) as otel:
        traced = run_breaker(driver, settings, form, script, otel.tracer_provider.get_tracer("test"))
    assert traced.comparable() == bare.comparable()
    check_breaker_spans(otel, traced)
