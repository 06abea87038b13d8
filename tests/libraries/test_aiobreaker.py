"""aiobreaker against the contract: async and sync calls, the decorator in both import orders, re-entry, listeners,
storage reads, exact spans, events and metrics through full cycles (the timeout is passed by moving the breaker's
``opened_at`` back, never by sleeping)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import aiobreaker
import pytest
from aiobreaker import CircuitBreaker, CircuitBreakerError, CircuitBreakerListener, CircuitBreakerState
from aiobreaker.state import CircuitBreakerBaseState, CircuitOpenState
from aiobreaker.storage.memory import CircuitMemoryStorage

from otel_resilience import semconv
from otel_resilience.core import breakers
from otel_resilience.instrumentation.aiobreaker import AioBreakerInstrumentor
from tests.support.breaker_checks import (
    ERROR,
    UNSET,
    assert_cycle,
    assert_snapshot_then_forgotten,
    async_outcome,
    breaker_spans,
    calls,
    cycle,
    outcome,
    run_async_cycle,
    run_cycle,
    run_in_threads,
    summary,
    transitions,
)
from tests.conftest import Otel, instrumented_fixture

REFUSED = "aiobreaker.state.CircuitBreakerError"
CYCLE = cycle(tripped=REFUSED, refused=REFUSED)  # aiobreaker raises its own error on a trip and a failed probe


@pytest.fixture(autouse=True)
def collected() -> None:
    gc.collect()  # breakers of earlier tests, kept in cycles by their exceptions' tracebacks, leave the registry


instrumented = instrumented_fixture(AioBreakerInstrumentor)


def timeout_elapsed(breaker: CircuitBreaker) -> None:
    """Move the breaker's open time back past its timeout (aiobreaker keeps it, naive UTC, in its storage)."""
    breaker._state_storage.opened_at = datetime.utcnow() - breaker.timeout_duration - timedelta(seconds=1)


def new_breaker(name: str | None = "payments", fail_max: int = 2, **kwargs: Any) -> CircuitBreaker:
    return CircuitBreaker(fail_max=fail_max, timeout_duration=timedelta(seconds=30), name=name, **kwargs)


def decorate_async(breaker: CircuitBreaker) -> Callable[[bool], Awaitable[str]]:
    @breaker
    async def charge(fail: bool) -> str:
        await asyncio.sleep(0)
        if fail:
            raise ConnectionError("payments down")
        return "paid"

    return charge


def assert_payments_cycle(otel: Otel, seen: list[Any]) -> None:
    """One span per user call, aiobreaker's re-entry for the probe included."""
    assert [type(x).__name__ for x in seen] == [
        "ConnectionError", "CircuitBreakerError", "CircuitBreakerError", "CircuitBreakerError", "str", "str",
    ]
    assert_cycle(otel, "payments", CYCLE, [1, 2, 2, 3, 0, 0])


@pytest.mark.parametrize("order", ["decorated_after_instrument", "decorated_before_instrument"])
async def test_async_decorator_full_cycle_in_either_order(otel: Otel, order: str) -> None:
    breaker = new_breaker()
    if order == "decorated_before_instrument":
        charge = decorate_async(breaker)
        AioBreakerInstrumentor().instrument(**otel.kwargs())
    else:
        AioBreakerInstrumentor().instrument(**otel.kwargs())
        charge = decorate_async(breaker)
    try:
        seen = await run_async_cycle(charge, lambda: timeout_elapsed(breaker))
    finally:
        AioBreakerInstrumentor().uninstrument()
    assert_payments_cycle(otel, seen)


async def test_call_async_full_cycle(instrumented: Otel) -> None:
    breaker = new_breaker()

    async def charge(fail: bool) -> str:
        if fail:
            raise ConnectionError("payments down")
        return "paid"

    seen = await run_async_cycle(lambda fail: breaker.call_async(charge, fail), lambda: timeout_elapsed(breaker))
    assert_payments_cycle(instrumented, seen)


def test_sync_call_full_cycle(instrumented: Otel) -> None:
    breaker = new_breaker()

    def charge(fail: bool) -> str:
        if fail:
            raise ConnectionError("payments down")
        return "paid"

    seen = run_cycle(lambda fail: breaker.call(charge, fail), lambda: timeout_elapsed(breaker))
    assert_payments_cycle(instrumented, seen)


def test_rejection_carries_the_refusal_error(instrumented: Otel) -> None:
    breaker = new_breaker()
    breaker.open()
    refused = outcome(breaker.call, lambda: "never runs")
    assert type(refused) is CircuitBreakerError
    (span,) = instrumented.spans()
    assert summary(span) == ("open", "rejected", REFUSED, ERROR, [])
    (event,) = span.events
    assert event.name == semconv.EXCEPTION_EVENT
    assert "exception.stacktrace" not in event.attributes


async def test_decorated_function_passed_to_call_is_one_call(instrumented: Otel) -> None:
    """``breaker.call(decorated)`` goes through ``call`` twice (aiobreaker's ``_ignore_on_call``): one user call."""
    breaker = new_breaker()

    @breaker
    def sync_work() -> str:
        return "sync"

    async_work = decorate_async(breaker)
    assert breaker.call(sync_work) == "sync"
    assert await breaker.call_async(async_work, False) == "paid"
    assert [summary(s) for s in breaker_spans(instrumented, "payments")] == [
        ("closed", "success", None, UNSET, []),
        ("closed", "success", None, UNSET, []),
    ]


async def test_call_made_by_the_guarded_function_is_its_own_call(instrumented: Otel) -> None:
    breaker = new_breaker(fail_max=5)

    async def inner() -> None:
        raise ConnectionError("inner down")

    async def outer() -> str:
        await async_outcome(breaker.call_async, inner)  # fails, and is swallowed here
        return "outer ok"

    assert await breaker.call_async(outer) == "outer ok"
    inner_span, outer_span = breaker_spans(instrumented, "payments")
    assert summary(inner_span) == ("closed", "failure", "ConnectionError", ERROR, [])
    assert summary(outer_span) == ("closed", "success", None, UNSET, [])
    assert inner_span.parent.span_id == outer_span.context.span_id
    assert [s.attributes[semconv.BREAKER_FAILURE_COUNT] for s in (inner_span, outer_span)] == [1, 0]


def test_excluded_exception_is_ignored(instrumented: Otel) -> None:
    breaker = new_breaker(exclude=[ValueError])

    def bad_input() -> None:
        raise ValueError("bad input")

    assert isinstance(outcome(breaker.call, bad_input), ValueError)
    (span,) = instrumented.spans()
    assert summary(span) == ("closed", "ignored", None, UNSET, [])
    assert span.events == ()


def test_listeners_are_untouched_and_still_told(instrumented: Otel) -> None:
    class Recorder(CircuitBreakerListener):
        def __init__(self) -> None:
            self.seen: list[Any] = []

        def before_call(self, breaker: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            self.seen.append(("before", func.__name__))

        def failure(self, breaker: Any, exception: Exception) -> None:
            self.seen.append(("failure", str(exception)))

        def success(self, breaker: Any) -> None:
            self.seen.append(("success",))

        def state_change(self, breaker: Any, old: Any, new: Any) -> None:
            self.seen.append(("change", old.state.name, new.state.name))

    recorder = Recorder()
    breaker = CircuitBreaker(fail_max=1, listeners=[recorder], name="told")

    def down() -> None:
        raise ConnectionError("down")

    def up() -> str:
        return "up"

    outcome(breaker.call, up)
    outcome(breaker.call, down)
    assert breaker.listeners == (recorder,)
    assert recorder.seen == [
        ("before", "up"), ("success",), ("before", "down"), ("failure", "down"), ("change", "CLOSED", "OPEN"),
    ]


def test_transitions_without_a_call_are_counted(instrumented: Otel) -> None:
    breaker = CircuitBreaker()  # unnamed, and never called: known by its class
    breaker.open()
    breaker.half_open()
    breaker.close()
    assert instrumented.spans() == []
    assert transitions(instrumented, "aiobreaker.circuitbreaker.CircuitBreaker") == {
        ("closed", "open"): 1, ("open", "half_open"): 1, ("half_open", "closed"): 1,
    }


def test_unnamed_breaker_takes_the_first_guarded_function_name(instrumented: Otel) -> None:
    breaker = CircuitBreaker()

    @breaker
    def load_profile() -> str:
        return "profile"

    load_profile()
    (span,) = instrumented.spans()
    name = f"{__name__}.test_unnamed_breaker_takes_the_first_guarded_function_name.<locals>.load_profile"
    assert span.attributes[semconv.BREAKER_NAME] == name


def test_guarded_generator_span_covers_consumption(instrumented: Otel) -> None:
    tracer = instrumented.tracer_provider.get_tracer("app")
    breaker = new_breaker()

    def pages(fail: bool) -> Iterator[int]:
        with tracer.start_as_current_span("fetch page"):
            pass
        yield 1
        if fail:
            raise ConnectionError("cursor lost")
        yield 2

    with tracer.start_as_current_span("consumer"):
        items = []
        for page in breaker.call(pages, False):
            with tracer.start_as_current_span(f"use {page}"):
                items.append(page)
    assert items == [1, 2]
    assert isinstance(outcome(lambda: list(breaker.call(pages, True))), ConnectionError)
    ok, failed = breaker_spans(instrumented, "payments")
    assert summary(ok) == ("closed", "success", None, UNSET, [])
    assert summary(failed) == ("closed", "failure", "ConnectionError", ERROR, [])
    assert [s.parent.span_id for s in instrumented.spans() if s.name == "fetch page"] == [
        ok.context.span_id, failed.context.span_id,
    ]
    assert instrumented.span("use 1").parent.span_id == instrumented.span("consumer").context.span_id


def test_generator_never_consumed_still_ends_its_span(instrumented: Otel) -> None:
    breaker = new_breaker()

    def pages() -> Iterator[int]:
        yield 1

    breaker.call(pages)
    gc.collect()
    (span,) = instrumented.spans()
    assert summary(span) == ("closed", "success", None, UNSET, [])


class CountingStorage(CircuitMemoryStorage):
    """Counts reads of the storage's state and counter, as a Redis storage would pay for each."""

    reads = 0

    @property
    def state(self) -> CircuitBreakerState:
        CountingStorage.reads += 1
        return self._state

    @state.setter
    def state(self, state: CircuitBreakerState) -> None:
        self._state = state

    @property
    def counter(self) -> int:
        CountingStorage.reads += 1
        return self._fail_counter


def test_state_is_read_without_touching_storage(instrumented: Otel) -> None:
    breaker = CircuitBreaker(state_storage=CountingStorage(CircuitBreakerState.CLOSED), name="counted")
    before = CountingStorage.reads
    breaker.call(lambda: "ok")
    per_call_with_us = CountingStorage.reads - before
    AioBreakerInstrumentor().uninstrument()
    before = CountingStorage.reads
    breaker.call(lambda: "ok")
    per_call_bare = CountingStorage.reads - before
    AioBreakerInstrumentor().instrument(**instrumented.kwargs())
    assert per_call_with_us == per_call_bare == 1  # aiobreaker's own read; none of ours
    (span,) = breaker_spans(instrumented, "counted")
    assert semconv.BREAKER_FAILURE_COUNT not in span.attributes  # not the in-memory storage: no read for it


def test_health_snapshot_and_weak_registry(instrumented: Otel) -> None:
    def tripped() -> CircuitBreaker:
        breaker = CircuitBreaker(fail_max=1, name="snap")
        outcome(breaker.call, lambda: 1 / 0)
        return breaker

    assert_snapshot_then_forgotten("aiobreaker", tripped, "snap", 1)


def test_threads_count_exactly(instrumented: Otel) -> None:
    breaker = CircuitBreaker(fail_max=10**6, name="busy")

    def work(i: int) -> int:
        if i % 4 == 0:
            raise ConnectionError("down")
        return i

    run_in_threads(instrumented, "busy", lambda i: breaker.call(work, i))
    assert calls(instrumented, "busy") == {("closed", "success"): 600, ("closed", "failure"): 200}


async def test_tasks_count_exactly_and_trip_once(instrumented: Otel) -> None:
    """Many tasks through one breaker that trips part way: every call is counted once, the trip once."""
    breaker = CircuitBreaker(fail_max=30, timeout_duration=timedelta(hours=1), name="tasks")

    async def work() -> str:
        await asyncio.sleep(0)
        raise ConnectionError("down")

    async def task() -> list[Any]:
        return [await async_outcome(breaker.call_async, work) for _ in range(10)]

    results = [r for rs in await asyncio.gather(*(task() for _ in range(40))) for r in rs]
    spans = breaker_spans(instrumented, "tasks")
    assert len(spans) == len(results) == 400
    counted = calls(instrumented, "tasks")
    assert sum(counted.values()) == 400
    assert counted[("open", "rejected")] == sum(
        1 for s in spans if s.attributes[semconv.BREAKER_RESULT] == "rejected"
    ) == sum(1 for r in results if isinstance(r, CircuitBreakerError) and "still open" in r.message)
    assert counted[("closed", "failure")] == 400 - counted[("open", "rejected")] >= 30
    assert transitions(instrumented, "tasks") == {("closed", "open"): 1}
    (trip,) = [s for s in spans if summary(s)[4] == [("closed", "open")]]
    assert summary(trip)[:2] == ("closed", "failure")


PATCHED = [
    (CircuitBreaker, "call"), (CircuitBreaker, "call_async"), (CircuitBreakerBaseState, "before_call"),
    (CircuitOpenState, "before_call"), (CircuitBreaker, "_inc_counter"), (CircuitBreaker, "_create_new_state"),
]


def test_uninstrument_restores_originals(otel: Otel) -> None:
    before = {(owner, name): vars(owner)[name] for owner, name in PATCHED}
    AioBreakerInstrumentor().instrument(**otel.kwargs())
    assert all(vars(owner)[name] is not before[(owner, name)] for owner, name in PATCHED)
    AioBreakerInstrumentor().uninstrument()
    assert all(vars(owner)[name] is before[(owner, name)] for owner, name in PATCHED)
    new_breaker("after").call(lambda: None)
    assert otel.spans() == []


async def _scenario() -> list[Any]:
    breaker = new_breaker("same", exclude=[KeyError])
    raised = ConnectionError("the same object")

    async def fail() -> None:
        raise raised

    async def ok() -> str:
        return "ok"

    def pages() -> Iterator[int]:
        yield 1
        yield 2

    seen: list[Any] = [await async_outcome(breaker.call_async, fail)]
    seen.append(seen[0] is raised)
    seen += [await async_outcome(breaker.call_async, fail), await async_outcome(breaker.call_async, ok)]
    timeout_elapsed(breaker)
    seen += [await async_outcome(breaker.call_async, ok), outcome(lambda: list(breaker.call(pages)))]
    seen.append(outcome(breaker.call, lambda: {}["missing"]))
    # aiobreaker's error carries the reopen time, which differs from run to run: compare its message
    return [(type(x).__name__, getattr(x, "message", str(x))) for x in seen] + [
        breaker.current_state, breaker.fail_counter,
    ]


async def test_behaviour_identical_with_and_without(otel: Otel) -> None:
    bare = await _scenario()
    AioBreakerInstrumentor().instrument(**otel.kwargs())
    try:
        traced = await _scenario()
    finally:
        AioBreakerInstrumentor().uninstrument()
    assert traced == bare
    assert bare[1] == ("bool", "True")  # the very exception object raised reaches the caller
    assert len(otel.spans()) == 6


def test_no_sdk_records_nothing_and_adds_no_inner_hooks() -> None:
    create_new_state = vars(CircuitBreaker)["_create_new_state"]
    AioBreakerInstrumentor().instrument()
    try:
        breaker = CircuitBreaker(fail_max=1, name="nosdk")
        assert isinstance(outcome(breaker.call, lambda: 1 / 0), CircuitBreakerError)
        assert isinstance(outcome(breaker.call, lambda: "ok"), CircuitBreakerError)
        assert vars(CircuitBreaker)["_create_new_state"] is create_new_state
        assert [b for b in breakers() if b["name"] == "nosdk"] == []
    finally:
        AioBreakerInstrumentor().uninstrument()


def test_states_map_to_the_contract() -> None:
    assert aiobreaker.CircuitBreakerState.HALF_OPEN.name == "HALF_OPEN"
    from otel_resilience.core.breaker import normalise_state

    assert [normalise_state(s) for s in CircuitBreakerState] == ["open", "closed", "half_open"]
