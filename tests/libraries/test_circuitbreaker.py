"""circuitbreaker (fabfuel) against the contract: every form, sync and async, both import orders, exact spans, events
and metrics through full cycles, with circuitbreaker's clock (``circuitbreaker.monotonic``) under the test's control."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import circuitbreaker
import pytest
from circuitbreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerMonitor, circuit

from otel_resilience import semconv
from otel_resilience.core import breakers
from otel_resilience.instrumentation.circuitbreaker import CircuitBreakerInstrumentor
from tests.support.breaker_checks import (
    ERROR,
    UNSET,
    Clock,
    assert_cycle,
    assert_snapshot_then_forgotten,
    async_outcome,
    breaker_spans,
    calls,
    cycle,
    gauge,
    outcome,
    run_async_cycle,
    run_cycle,
    run_in_tasks,
    run_in_threads,
    summary,
    transitions,
)
from tests.conftest import Otel, instrumented_fixture

REFUSED = "circuitbreaker.CircuitBreakerError"
CYCLE = cycle(tripped="ConnectionError", refused=REFUSED)  # circuitbreaker re-raises the original error on a trip
CYCLE_FAILURE_COUNTS = [1, 2, 2, 3, 0, 0]


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    # circuitbreaker keeps its last failure, whose traceback holds the breaker: breakers of earlier tests live on
    # in reference cycles, and the registry (weak) would still read them under the same names.
    gc.collect()
    clock = Clock()
    monkeypatch.setattr(circuitbreaker, "monotonic", clock)
    monkeypatch.setattr(CircuitBreakerMonitor, "circuit_breakers", {})  # the library's global registry, per test
    return clock


instrumented = instrumented_fixture(CircuitBreakerInstrumentor)


def make_charge(name: str = "payments") -> Callable[[bool], str]:
    @circuit(failure_threshold=2, recovery_timeout=30, name=name)
    def charge(fail: bool) -> str:
        if fail:
            raise ConnectionError("payments down")
        return "paid"

    return charge


def past_timeout(clock: Clock) -> Callable[[], None]:
    return lambda: clock.advance(31)


@pytest.mark.parametrize("order", ["decorated_after_instrument", "decorated_before_instrument"])
def test_full_cycle_in_either_import_order(otel: Otel, clock: Clock, order: str) -> None:
    """circuitbreaker's closure looks everything up on the breaker at call time: both orders trace the same."""
    if order == "decorated_before_instrument":
        charge = make_charge()
        CircuitBreakerInstrumentor().instrument(**otel.kwargs())
    else:
        CircuitBreakerInstrumentor().instrument(**otel.kwargs())
        charge = make_charge()
    try:
        seen = run_cycle(charge, past_timeout(clock))
    finally:
        CircuitBreakerInstrumentor().uninstrument()

    assert [type(x).__name__ for x in seen] == [
        "ConnectionError", "ConnectionError", "CircuitBreakerError", "ConnectionError", "str", "str",
    ]
    assert_cycle(otel, "payments", CYCLE, CYCLE_FAILURE_COUNTS)
    assert breaker_spans(otel, "payments")[2].events == ()  # no exception object exists when circuitbreaker refuses


def test_failure_carries_type_and_message_not_stacktrace(instrumented: Otel) -> None:
    charge = make_charge()
    outcome(charge, True)
    (span,) = instrumented.spans()
    (event,) = span.events
    assert event.name == semconv.EXCEPTION_EVENT
    assert dict(event.attributes) == {"exception.type": "ConnectionError", "exception.message": "payments down"}


def test_refused_call_with_fallback_is_still_rejected(instrumented: Otel) -> None:
    tracer = instrumented.tracer_provider.get_tracer("app")

    def cached_quote() -> str:
        with tracer.start_as_current_span("fallback"):
            return "cached"

    @circuit(failure_threshold=1, recovery_timeout=30, name="quotes", fallback_function=cached_quote)
    def quote() -> str:
        raise ConnectionError("quotes down")

    assert isinstance(outcome(quote), ConnectionError)
    assert quote() == "cached"  # the fallback's answer reaches the caller unchanged
    trip, refused = breaker_spans(instrumented, "quotes")
    assert summary(trip) == ("closed", "failure", "ConnectionError", ERROR, [("closed", "open")])
    assert summary(refused) == ("open", "rejected", REFUSED, ERROR, [])
    # Known limit: the refused call's span ends at the refusal; the fallback runs after it, under the caller.
    assert instrumented.span("fallback").parent is None


def test_refused_call_without_fallback_raises_as_before(instrumented: Otel) -> None:
    charge = make_charge()
    outcome(charge, True)
    outcome(charge, True)
    refused = outcome(charge, False)
    assert type(refused) is CircuitBreakerError
    assert summary(breaker_spans(instrumented, "payments")[-1]) == ("open", "rejected", REFUSED, ERROR, [])


def test_unnamed_breaker_takes_the_function_module_qualname(instrumented: Otel) -> None:
    @circuit
    def load_profile() -> str:
        return "profile"

    assert load_profile() == "profile"
    (span,) = instrumented.spans()
    name = f"{__name__}.test_unnamed_breaker_takes_the_function_module_qualname.<locals>.load_profile"
    assert span.name == f"circuitbreaker {name}"
    assert span.attributes[semconv.BREAKER_NAME] == name


def test_subclass_with_expected_exception_ignores_the_others(instrumented: Otel) -> None:
    class PaymentsBreaker(CircuitBreaker):
        FAILURE_THRESHOLD = 2
        RECOVERY_TIMEOUT = 60
        EXPECTED_EXCEPTION = ConnectionError

    @circuit(cls=PaymentsBreaker, name="subclassed")
    def pay(exc: Exception | None) -> str:
        if exc is not None:
            raise exc
        return "paid"

    assert isinstance(outcome(pay, ConnectionError("down")), ConnectionError)
    assert isinstance(outcome(pay, ValueError("bad card")), ValueError)  # not expected: circuitbreaker resets
    assert [summary(s) for s in breaker_spans(instrumented, "subclassed")] == [
        ("closed", "failure", "ConnectionError", ERROR, []),
        ("closed", "ignored", None, UNSET, []),
    ]
    assert [s.attributes[semconv.BREAKER_FAILURE_COUNT] for s in instrumented.spans()] == [1, 0]


def test_subclass_instance_as_decorator(instrumented: Otel, clock: Clock) -> None:
    class OneStrike(CircuitBreaker):
        FAILURE_THRESHOLD = 1

    @OneStrike(name="one-strike")
    def flaky() -> None:
        raise TimeoutError("slow")

    seen = [outcome(flaky), outcome(flaky)]
    assert [type(x) for x in seen] == [TimeoutError, CircuitBreakerError]
    assert [summary(s) for s in breaker_spans(instrumented, "one-strike")] == [
        ("closed", "failure", "TimeoutError", ERROR, [("closed", "open")]),
        ("open", "rejected", REFUSED, ERROR, []),
    ]


def test_call_method_never_refuses(instrumented: Otel) -> None:
    """``breaker.call(f)`` runs `f` whatever the state (only the decorator checks): admitted in the state found."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=30, name="direct")

    def down() -> None:
        raise ConnectionError("down")

    assert isinstance(outcome(breaker.call, down), ConnectionError)
    assert breaker.call(lambda: "ran anyway") == "ran anyway"
    assert [summary(s) for s in breaker_spans(instrumented, "direct")] == [
        ("closed", "failure", "ConnectionError", ERROR, [("closed", "open")]),
        ("open", "success", None, UNSET, [("open", "closed")]),
    ]


def test_reading_state_outside_a_call_is_not_a_call(instrumented: Otel) -> None:
    charge = make_charge()
    outcome(charge, True)
    outcome(charge, True)
    breaker = CircuitBreakerMonitor.get("payments")
    assert breaker.opened and breaker.state == "open"
    assert list(CircuitBreakerMonitor.get_open()) == [breaker]
    assert not CircuitBreakerMonitor.all_closed()
    assert len(instrumented.spans()) == 2


def test_timer_to_half_open_is_shown_by_the_gauge_and_counted_by_the_probe(instrumented: Otel, clock: Clock) -> None:
    """circuitbreaker moves to half-open by the clock alone: the gauge shows it (reading changes nothing), and the
    probe, the first call to see it, counts it and carries its event."""
    charge = make_charge()
    outcome(charge, True)
    outcome(charge, True)
    clock.advance(31)
    assert gauge(instrumented, "payments") == {"closed": 0, "open": 0, "half_open": 1}
    assert gauge(instrumented, "payments") == {"closed": 0, "open": 0, "half_open": 1}
    assert transitions(instrumented, "payments") == {("closed", "open"): 1}  # the reading counted nothing
    assert charge(False) == "paid"
    probe = breaker_spans(instrumented, "payments")[-1]
    assert summary(probe) == ("half_open", "success", None, UNSET, [("open", "half_open"), ("half_open", "closed")])
    assert transitions(instrumented, "payments") == {
        ("closed", "open"): 1, ("open", "half_open"): 1, ("half_open", "closed"): 1,
    }
    (snapshot,) = [b for b in breakers() if b["name"] == "payments"]
    assert snapshot == {
        "name": "payments", "library": "circuitbreaker", "state": "closed", "failure_count": 0,
        "last_transition": snapshot["last_transition"],
    }
    assert isinstance(snapshot["last_transition"], float)


def test_generator_span_covers_consumption(instrumented: Otel) -> None:
    tracer = instrumented.tracer_provider.get_tracer("app")

    @circuit(name="feed")
    def feed() -> Iterator[int]:
        with tracer.start_as_current_span("fetch page"):
            pass
        yield 1
        yield 2

    with tracer.start_as_current_span("consumer") as consumer:
        pages = feed()
        assert instrumented.spans() == []  # nothing runs, nothing is traced, until it is consumed
        for page in pages:
            with tracer.start_as_current_span(f"use {page}"):
                pass
    call = instrumented.span("circuitbreaker feed")
    assert summary(call) == ("closed", "success", None, UNSET, [])
    assert call.parent.span_id == consumer.get_span_context().span_id
    assert instrumented.span("fetch page").parent.span_id == call.context.span_id  # the body runs in the call
    assert instrumented.span("use 1").parent.span_id == consumer.get_span_context().span_id  # the consumer does not
    assert call.end_time >= instrumented.span("use 2").end_time  # ends when exhausted


def test_generator_failure_and_early_close(instrumented: Otel) -> None:
    @circuit(failure_threshold=5, name="rows")
    def rows(fail: bool) -> Iterator[int]:
        yield 1
        if fail:
            raise ConnectionError("cursor lost")
        yield 2

    assert isinstance(outcome(lambda: list(rows(True))), ConnectionError)
    early = rows(False)
    assert next(early) == 1
    early.close()  # circuitbreaker resets on GeneratorExit, as on success
    assert [summary(s) for s in breaker_spans(instrumented, "rows")] == [
        ("closed", "failure", "ConnectionError", ERROR, []),
        ("closed", "success", None, UNSET, []),
    ]


async def test_async_full_cycle(instrumented: Otel, clock: Clock) -> None:
    @circuit(failure_threshold=2, recovery_timeout=30, name="payments")
    async def charge(fail: bool) -> str:
        await asyncio.sleep(0)
        if fail:
            raise ConnectionError("payments down")
        return "paid"

    seen = await run_async_cycle(charge, past_timeout(clock))
    assert [type(x).__name__ for x in seen] == [
        "ConnectionError", "ConnectionError", "CircuitBreakerError", "ConnectionError", "str", "str",
    ]
    assert_cycle(instrumented, "payments", CYCLE, CYCLE_FAILURE_COUNTS)


async def test_async_generator_span_covers_consumption(instrumented: Otel, clock: Clock) -> None:
    tracer = instrumented.tracer_provider.get_tracer("app")

    @circuit(failure_threshold=1, recovery_timeout=30, name="stream")
    async def stream(fail: bool) -> AsyncIterator[int]:
        with tracer.start_as_current_span("read chunk"):
            await asyncio.sleep(0)
        yield 1
        if fail:
            raise ConnectionError("stream cut")
        yield 2

    assert [item async for item in stream(False)] == [1, 2]

    async def drain() -> list[int]:
        return [item async for item in stream(True)]

    assert isinstance(await async_outcome(drain), ConnectionError)
    assert isinstance(await async_outcome(drain), CircuitBreakerError)
    ok, failed, refused = breaker_spans(instrumented, "stream")
    assert [summary(s) for s in (ok, failed, refused)] == [
        ("closed", "success", None, UNSET, []),
        ("closed", "failure", "ConnectionError", ERROR, [("closed", "open")]),
        ("open", "rejected", REFUSED, ERROR, []),
    ]
    first_chunk = [s for s in instrumented.spans() if s.name == "read chunk"][0]
    assert first_chunk.parent.span_id == ok.context.span_id


def test_threads_count_exactly(instrumented: Otel) -> None:
    @circuit(failure_threshold=10**6, name="busy")
    def work(i: int) -> int:
        if i % 5 == 0:
            raise ConnectionError("down")
        return i

    run_in_threads(instrumented, "busy", work)
    assert calls(instrumented, "busy") == {("closed", "success"): 640, ("closed", "failure"): 160}
    assert transitions(instrumented, "busy") == {}


async def test_tasks_count_exactly(instrumented: Otel) -> None:
    await run_in_tasks(instrumented, "tasks", circuit(failure_threshold=10**6, name="tasks"))


def test_health_snapshot_and_weak_registry(instrumented: Otel) -> None:
    def tripped() -> CircuitBreaker:
        breaker = CircuitBreaker(failure_threshold=1, name="snap")  # used through .call: not in circuitbreaker's monitor
        outcome(breaker.call, lambda: 1 / 0)
        return breaker

    assert_snapshot_then_forgotten("circuitbreaker", tripped, "snap", 1)


PATCHED = ("call", "call_generator", "call_async", "call_async_generator", "opened", "_CircuitBreaker__call_failed")


def test_uninstrument_restores_originals(otel: Otel) -> None:
    before = {name: vars(CircuitBreaker)[name] for name in PATCHED}
    CircuitBreakerInstrumentor().instrument(**otel.kwargs())
    assert all(vars(CircuitBreaker)[name] is not before[name] for name in PATCHED)
    CircuitBreakerInstrumentor().uninstrument()
    assert all(vars(CircuitBreaker)[name] is before[name] for name in PATCHED)
    run_cycle(make_charge("after"), past_timeout(Clock()))
    assert otel.spans() == []


def _scenario(clock: Clock) -> list[Any]:
    """Every form once, through a full cycle; what the caller sees, and the breaker's own state."""
    raised = ConnectionError("the same object")

    @circuit(failure_threshold=2, recovery_timeout=30, name="same", fallback_function=lambda fail: f"fallback {fail}")
    def guarded(fail: bool) -> str:
        if fail:
            raise raised
        return "ok"

    @circuit(name="echo")
    def echo() -> Iterator[Any]:
        received = yield "first"
        yield f"got {received}"

    seen: list[Any] = [outcome(guarded, True), outcome(guarded, True), outcome(guarded, False)]
    clock.advance(31)
    seen += [outcome(guarded, False), outcome(guarded, False)]
    gen = echo()
    seen += [next(gen), gen.send("hello"), outcome(next, gen)]
    breaker = CircuitBreakerMonitor.get("same")
    return [(type(x).__name__, str(x)) for x in seen] + [seen[0] is raised, breaker.state, breaker.failure_count]


def test_behaviour_identical_with_and_without(otel: Otel, clock: Clock) -> None:
    bare = _scenario(clock)
    CircuitBreakerInstrumentor().instrument(**otel.kwargs())
    try:
        traced = _scenario(clock)
    finally:
        CircuitBreakerInstrumentor().uninstrument()
    assert traced == bare
    assert bare[0] == ("ConnectionError", "the same object") and bare[-3] is True
    assert len(otel.spans()) == 6


def test_no_sdk_records_nothing_and_adds_no_inner_hooks(clock: Clock) -> None:
    opened = vars(CircuitBreaker)["opened"]
    CircuitBreakerInstrumentor().instrument()
    try:
        charge = make_charge("nosdk")
        assert [type(x).__name__ for x in run_cycle(charge, past_timeout(clock))][:3] == [
            "ConnectionError", "ConnectionError", "CircuitBreakerError",
        ]
        assert vars(CircuitBreaker)["opened"] is opened  # the open check is only hooked once something records
        assert [b for b in breakers() if b["name"] == "nosdk"] == []
    finally:
        CircuitBreakerInstrumentor().uninstrument()


def test_suppressed_instrumentation_records_nothing(instrumented: Otel) -> None:
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

    charge = make_charge("suppressed")
    token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        seen = [type(outcome(charge, True)).__name__ for _ in range(3)]
    finally:
        detach(token)
    assert seen == ["ConnectionError", "ConnectionError", "CircuitBreakerError"]
    assert instrumented.spans() == []
    assert [b for b in breakers() if b["name"] == "suppressed"] == []


def test_call_of_a_partial_is_traced_and_named_after_its_function(instrumented: Otel) -> None:
    import functools

    def fetch(user: str) -> str:
        return f"profile of {user}"

    breaker = CircuitBreaker()  # unnamed, used only through .call: named after the first guarded function
    assert breaker.call(functools.partial(fetch, "ada")) == "profile of ada"
    (span,) = instrumented.spans()
    name = f"{__name__}.test_call_of_a_partial_is_traced_and_named_after_its_function.<locals>.fetch"
    assert span.attributes[semconv.BREAKER_NAME] == name
    assert summary(span) == ("closed", "success", None, UNSET, [])
