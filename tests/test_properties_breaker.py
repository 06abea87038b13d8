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

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock

import pybreaker
import pytest
from hypothesis import event, given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from otel_resilience import semconv
from otel_resilience.core.errors import error_type
from otel_resilience.instrumentation.pybreaker import PyBreakerInstrumentor
from tests.conftest import Otel
from tests.evidence import PROPERTY_SETTINGS, children, describe, instrumented, point_counts


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

    def comparable(self) -> list[tuple[Any, ...]]:
        return [
            (describe(e, self.raised), r.outcome, r.ran, r.state_after, r.fail_counter, r.success_counter, r.transitions)
            for r, e in zip(self.records, self.escaped, strict=True)
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
