"""pybreaker against the contract: call spans, admitted state, results, transitions, metrics, forms, behaviour."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pybreaker
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from otel_resilience import semconv
from otel_resilience.core import breakers
from otel_resilience.instrumentation.pybreaker import PyBreakerInstrumentor
from tests.conftest import Otel, instrumented_fixture


instrumented = instrumented_fixture(PyBreakerInstrumentor)


def down() -> None:
    raise ConnectionError("payments down")


def ok() -> str:
    return "paid"


def attempt(breaker: pybreaker.CircuitBreaker, fn: Any) -> Any:
    try:
        return breaker.call(fn)
    except Exception as exc:  # noqa: BLE001 - the test looks at what the caller got
        return exc


def timeout_elapsed(breaker: pybreaker.CircuitBreaker) -> None:
    """Move the breaker's clock past its reset timeout without sleeping (pybreaker keeps opened_at in its storage)."""
    opened_at = breaker._state_storage.opened_at
    now = datetime.now(timezone.utc) if opened_at is None or opened_at.tzinfo else datetime.utcnow()  # naive before 1.1
    breaker._state_storage.opened_at = now - timedelta(seconds=breaker.reset_timeout + 1)


def summary(span: ReadableSpan) -> tuple[Any, ...]:
    changes = [
        (e.attributes[semconv.BREAKER_PREVIOUS_STATE], e.attributes[semconv.BREAKER_STATE])
        for e in span.events
        if e.name == semconv.BREAKER_STATE_CHANGE_EVENT
    ]
    return (
        span.attributes[semconv.BREAKER_STATE],
        span.attributes[semconv.BREAKER_RESULT],
        span.attributes.get(semconv.ERROR_TYPE),
        span.status.status_code,
        changes,
    )


def transitions(otel: Otel) -> dict[tuple[str, str], int]:
    return {
        (p.attributes[semconv.BREAKER_PREVIOUS_STATE], p.attributes[semconv.BREAKER_STATE]): p.value
        for p in otel.metric_points(semconv.METRIC_BREAKER_TRANSITIONS)
    }


def test_full_cycle(instrumented: Otel) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=30, name="payments")
    outcomes = [attempt(breaker, down), attempt(breaker, down), attempt(breaker, ok)]
    timeout_elapsed(breaker)
    outcomes.append(attempt(breaker, down))  # the probe fails: open again
    timeout_elapsed(breaker)
    outcomes.append(attempt(breaker, ok))  # the probe succeeds: closed
    outcomes.append(attempt(breaker, ok))
    assert [type(o).__name__ for o in outcomes] == [
        "ConnectionError", "CircuitBreakerError", "CircuitBreakerError", "CircuitBreakerError", "str", "str",
    ]

    spans = instrumented.spans()
    assert [s.name for s in spans] == ["circuitbreaker payments"] * 6  # one span per user call, re-entry included
    err = StatusCode.ERROR
    assert [summary(s) for s in spans] == [
        ("closed", "failure", "ConnectionError", err, []),
        ("closed", "failure", "pybreaker.CircuitBreakerError", err, [("closed", "open")]),
        ("open", "rejected", "pybreaker.CircuitBreakerError", err, []),
        ("half_open", "failure", "pybreaker.CircuitBreakerError", err, [("open", "half_open"), ("half_open", "open")]),
        ("half_open", "success", None, StatusCode.UNSET, [("open", "half_open"), ("half_open", "closed")]),
        ("closed", "success", None, StatusCode.UNSET, []),
    ]
    assert all(s.kind is SpanKind.INTERNAL for s in spans)
    assert all(s.attributes[semconv.BREAKER_NAME] == "payments" for s in spans)
    assert [s.attributes[semconv.BREAKER_FAILURE_COUNT] for s in spans] == [1, 2, 2, 3, 0, 0]
    rejected = spans[2]
    (event,) = rejected.events
    assert event.name == "exception"
    assert "exception.stacktrace" not in event.attributes

    assert transitions(instrumented) == {
        ("closed", "open"): 1, ("open", "half_open"): 2, ("half_open", "open"): 1, ("half_open", "closed"): 1,
    }
    calls = {
        (p.attributes[semconv.BREAKER_STATE], p.attributes[semconv.BREAKER_RESULT]): p.value
        for p in instrumented.metric_points(semconv.METRIC_BREAKER_CALLS)
    }
    assert calls == {("closed", "failure"): 2, ("open", "rejected"): 1, ("half_open", "failure"): 1,
                     ("half_open", "success"): 1, ("closed", "success"): 1}
    gauge = {
        p.attributes[semconv.BREAKER_STATE]: p.value
        for p in instrumented.metric_points(semconv.METRIC_BREAKER_STATE)
        if p.attributes[semconv.BREAKER_NAME] == "payments"
    }
    assert gauge == {"closed": 1, "open": 0, "half_open": 0}


def test_listeners_are_untouched_and_still_told(instrumented: Otel) -> None:
    class Recorder(pybreaker.CircuitBreakerListener):
        def __init__(self) -> None:
            self.changes: list[tuple[str, str]] = []

        def state_change(self, cb: Any, old: Any, new: Any) -> None:
            self.changes.append((old.name, new.name))

    recorder = Recorder()
    breaker = pybreaker.CircuitBreaker(fail_max=1, listeners=[recorder], name="b")
    attempt(breaker, down)
    assert breaker.listeners == (recorder,)
    assert recorder.changes == [("closed", "open")]


def test_unnamed_breaker_takes_first_guarded_function_name(instrumented: Otel) -> None:
    breaker = pybreaker.CircuitBreaker()

    @breaker
    def load_profile() -> str:
        return "profile"

    assert load_profile() == "profile"
    breaker.call(ok)  # another function: the name stays
    name = f"{__name__}.test_unnamed_breaker_takes_first_guarded_function_name.<locals>.load_profile"
    assert [s.name for s in instrumented.spans()] == [f"circuitbreaker {name}"] * 2


payments = pybreaker.CircuitBreaker(fail_max=3, name="module-level")


@payments
def charge(amount: int) -> int:
    return amount * 2


def test_decorated_before_instrumentation(instrumented: Otel) -> None:
    assert charge(21) == 42
    (span,) = instrumented.spans()
    assert span.name == "circuitbreaker module-level"
    assert summary(span) == ("closed", "success", None, StatusCode.UNSET, [])


def test_excluded_exception_is_ignored(instrumented: Otel) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, exclude=[KeyError], name="lookup")

    def missing() -> None:
        raise KeyError("k")

    assert isinstance(attempt(breaker, missing), KeyError)
    (span,) = instrumented.spans()
    assert summary(span) == ("closed", "ignored", None, StatusCode.UNSET, [])
    assert breaker.current_state == "closed"


def test_no_new_error_on_trip_raises_the_original(instrumented: Otel) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, name="raw", throw_new_error_on_trip=False)
    raised = ConnectionError("x")

    def fail() -> None:
        raise raised

    assert attempt(breaker, fail) is raised
    (span,) = instrumented.spans()
    assert summary(span) == ("closed", "failure", "ConnectionError", StatusCode.ERROR, [("closed", "open")])


def test_calling_block_span_covers_the_body(instrumented: Otel) -> None:
    breaker = pybreaker.CircuitBreaker(name="block")
    tracer = instrumented.tracer_provider.get_tracer("app")
    with breaker.calling():
        with tracer.start_as_current_span("inside"):
            pass
    with pytest.raises(ConnectionError):
        with breaker.calling():
            raise ConnectionError("in block")
    spans = {s.name: s for s in instrumented.spans() if s.name == "inside"}
    calls = [s for s in instrumented.spans() if s.name == "circuitbreaker block"]
    assert [summary(s)[:3] for s in calls] == [("closed", "success", None), ("closed", "failure", "ConnectionError")]
    assert spans["inside"].parent.span_id == calls[0].context.span_id
    assert calls[0].start_time <= spans["inside"].start_time and spans["inside"].end_time <= calls[0].end_time
    assert not trace.get_current_span().get_span_context().is_valid


def test_unnamed_calling_block_is_named_after_the_enclosing_function(instrumented: Otel) -> None:
    breaker = pybreaker.CircuitBreaker()
    with breaker.calling():
        pass
    (span,) = instrumented.spans()
    assert span.name == f"circuitbreaker {__name__}.test_unnamed_calling_block_is_named_after_the_enclosing_function"


def test_guarded_generator_span_covers_consumption(instrumented: Otel) -> None:
    breaker = pybreaker.CircuitBreaker(name="stream")

    @breaker
    def rows() -> Iterator[int]:
        yield 1
        yield 2

    generator = rows()
    assert instrumented.spans() == []  # not consumed yet
    assert list(generator) == [1, 2]
    (span,) = instrumented.spans()
    assert summary(span)[:2] == ("closed", "success")


def test_transition_without_a_call_is_counted(instrumented: Otel) -> None:
    breaker = pybreaker.CircuitBreaker(name="manual")
    breaker.open()
    breaker.close()
    assert instrumented.spans() == []
    assert transitions(instrumented) == {("closed", "open"): 1, ("open", "closed"): 1}


def test_health_snapshot_and_weak_registry(instrumented: Otel) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=1, name="snap")
    attempt(breaker, down)
    (snapshot,) = [b for b in breakers() if b["name"] == "snap"]
    assert snapshot["library"] == "pybreaker"
    assert snapshot["state"] == "open"
    assert snapshot["failure_count"] == 1
    assert isinstance(snapshot["last_transition"], float)
    del breaker
    gc.collect()
    assert [b for b in breakers() if b["name"] == "snap"] == []


def test_threads_count_exactly(instrumented: Otel) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=10_000, name="busy")
    tracer = instrumented.tracer_provider.get_tracer("app")

    def worker(i: int) -> None:
        for j in range(25):
            with tracer.start_as_current_span(f"caller {i}"):
                attempt(breaker, down if j % 5 == 0 else ok)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = [s for s in instrumented.spans() if s.name == "circuitbreaker busy"]
    assert len(calls) == 200
    callers = {s.context.span_id: s for s in instrumented.spans() if s.name.startswith("caller")}
    assert all(c.parent.span_id in callers for c in calls)  # each under its own caller
    points = {p.attributes[semconv.BREAKER_RESULT]: p.value for p in instrumented.metric_points(semconv.METRIC_BREAKER_CALLS)}
    assert points == {"success": 160, "failure": 40}


def test_state_is_read_without_touching_storage(instrumented: Otel) -> None:
    class CountingStorage(pybreaker.CircuitMemoryStorage):
        reads = 0

        @property
        def state(self) -> str:
            CountingStorage.reads += 1
            return super().state

        @state.setter
        def state(self, value: str) -> None:
            pybreaker.CircuitMemoryStorage.state.fset(self, value)  # type: ignore[attr-defined]

    breaker = pybreaker.CircuitBreaker(state_storage=CountingStorage("closed"), name="counted")
    bare_reads_before = CountingStorage.reads
    breaker.call(ok)
    per_call_with_us = CountingStorage.reads - bare_reads_before
    PyBreakerInstrumentor().uninstrument()
    before = CountingStorage.reads
    breaker.call(ok)
    per_call_bare = CountingStorage.reads - before
    PyBreakerInstrumentor().instrument(**instrumented.kwargs())
    assert per_call_with_us == per_call_bare
    (span,) = [s for s in instrumented.spans() if s.name == "circuitbreaker counted"]
    assert semconv.BREAKER_FAILURE_COUNT not in span.attributes  # not the in-memory storage: no extra read


def test_uninstrument_restores_originals(otel: Otel) -> None:
    targets = [(pybreaker.CircuitBreaker, "call"), (pybreaker.CircuitOpenState, "before_call"),
               (pybreaker.CircuitBreaker, "_create_new_state")]
    before = {t: vars(t[0])[t[1]] for t in targets}
    PyBreakerInstrumentor().instrument(**otel.kwargs())
    PyBreakerInstrumentor().uninstrument()
    assert all(vars(owner)[name] is before[(owner, name)] for owner, name in targets)
    pybreaker.CircuitBreaker(name="after").call(ok)
    assert otel.spans() == []


def _cycle() -> list[Any]:
    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=30, name="same")
    seen = [attempt(breaker, down), attempt(breaker, down), attempt(breaker, ok)]
    timeout_elapsed(breaker)
    seen += [attempt(breaker, ok), attempt(breaker, ok)]
    return [(type(x).__name__, str(x)) for x in seen] + [breaker.current_state, breaker.fail_counter]


def test_behaviour_identical_with_and_without(otel: Otel) -> None:
    bare = _cycle()
    PyBreakerInstrumentor().instrument(**otel.kwargs())
    try:
        traced = _cycle()
    finally:
        PyBreakerInstrumentor().uninstrument()
    assert traced == bare
    assert len(otel.spans()) == 5


def test_same_exception_object_reaches_the_caller(instrumented: Otel) -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=5, name="same-object")
    raised = ConnectionError("x")

    def fail() -> None:
        raise raised

    assert attempt(breaker, fail) is raised


def test_no_sdk_records_nothing_and_adds_no_inner_hooks() -> None:
    # The global providers are the API's defaults here (no SDK configured in this process).
    inner_hooks = [(pybreaker.CircuitBreakerState, "before_call"), (pybreaker.CircuitOpenState, "before_call"),
                   (pybreaker.CircuitBreaker, "_inc_counter"), (pybreaker.CircuitBreaker, "_create_new_state")]
    before = {t: vars(t[0])[t[1]] for t in inner_hooks}
    bare = pybreaker.CircuitBreaker(fail_max=1, name="nosdk-bare")
    bare_seen = [attempt(bare, down), attempt(bare, ok)]
    PyBreakerInstrumentor().instrument()
    try:
        breaker = pybreaker.CircuitBreaker(fail_max=1, name="nosdk")
        seen = [attempt(breaker, down), attempt(breaker, ok)]
        assert [(type(x), str(x)) for x in seen] == [(type(x), str(x)) for x in bare_seen]
        assert isinstance(seen[0], pybreaker.CircuitBreakerError) and isinstance(seen[1], pybreaker.CircuitBreakerError)
        assert (breaker.current_state, breaker.fail_counter) == (bare.current_state, bare.fail_counter) == ("open", 1)
        # the inner hooks are only put in once something records, and no listener of ours is added
        assert all(vars(owner)[name] is before[(owner, name)] for owner, name in inner_hooks)
        assert breaker.listeners == ()
        assert [b for b in breakers() if b["name"] == "nosdk"] == []
        assert not trace.get_current_span().get_span_context().is_valid
    finally:
        PyBreakerInstrumentor().uninstrument()
