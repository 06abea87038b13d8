"""Many threads and many asyncio tasks retrying and tripping shared breakers at once.

Every operation runs under its own caller span and records, from inside the guarded code, which span was current
and whether the breaker let it run. Afterwards each caller span must hold exactly its own operation: one retry span,
one attempt span per attempt it made, one breaker span per attempt (``rejected`` exactly when the dependency did not
run), the state changes its own calls caused, and nothing of any other operation; span and metric totals must add
up exactly.

The breaker's clock is a shared counter that moves one second per reading, so breakers trip, wait out their timeout,
probe and close again many times during a test, without sleeping.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pybreaker
import pytest
import tenacity
from opentelemetry import trace

from otel_resilience import semconv
from otel_resilience.instrumentation.pybreaker import PyBreakerInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from tests.conftest import Otel
from tests.support.evidence import TickingClock, children, instrumented, point_counts
from tests.evidence.test_properties_breaker import BREAKERS, Settings

THREADS = 8
OPS_PER_THREAD = 25
TASKS = 200
WAVE = 20
"""Tasks started together in the breaker tests: calls of one wave are in flight at once, later waves find the
breaker as the earlier ones left it."""
MAX_ATTEMPTS = 4
HANG_GUARD = 120.0
"""Seconds after which a worker is considered hung: a failure guard, never a timing measurement."""

_OP: contextvars.ContextVar[int] = contextvars.ContextVar("op")
_ATTEMPT: contextvars.ContextVar[int] = contextvars.ContextVar("attempt")


@pytest.fixture
def both(otel: Otel) -> Iterator[Otel]:
    TenacityInstrumentor().instrument(**otel.kwargs())
    PyBreakerInstrumentor().instrument(**otel.kwargs())
    yield otel
    PyBreakerInstrumentor().uninstrument()
    TenacityInstrumentor().uninstrument()


@pytest.fixture
def ticking_clock() -> Iterator[None]:
    with mock.patch.object(pybreaker, "datetime", TickingClock(per_read=True).datetime_class()):
        yield


@dataclass
class Ledger:
    """What happened, as seen from inside the app: per (operation, attempt), whether the dependency ran and which
    span was current there; per operation, its outcome; per (operation, attempt), the transitions it caused."""

    ran: dict[tuple[int, int], int] = field(default_factory=dict)  # -> the span id current inside the dependency
    attempts: Counter[int] = field(default_factory=Counter)
    outcomes: dict[int, str] = field(default_factory=dict)
    transitions: defaultdict[tuple[int, int], list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attempt(self, op: int) -> int:
        with self.lock:
            self.attempts[op] += 1
            return self.attempts[op]

    def dependency_ran(self, op: int, attempt: int) -> None:
        self.ran[(op, attempt)] = trace.get_current_span().get_span_context().span_id

    def listener(self) -> pybreaker.CircuitBreakerListener:
        ledger = self

        class Transitions(pybreaker.CircuitBreakerListener):
            """pybreaker notifies in the thread or task of the call that caused the change."""

            def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
                if old_state is not None and old_state.name != new_state.name:  # pybreaker also says open -> open
                    key = (_OP.get(), _ATTEMPT.get())
                    ledger.transitions[key].append((old_state.name.replace("-", "_"), new_state.name.replace("-", "_")))

        return Transitions()


def fails_first(op: int) -> int:
    """How many attempts of operation `op` the dependency fails before it answers: 0, 1 or 2, in runs of
    neighbouring operations (so that failures come in bursts that trip the breaker)."""
    return (op // 10) % 3


def retrying_kwargs() -> dict[str, Any]:
    return {
        "stop": tenacity.stop_after_attempt(MAX_ATTEMPTS),
        "wait": tenacity.wait_none(),
        "retry": tenacity.retry_if_exception_type((ConnectionError, pybreaker.CircuitBreakerError)),
    }


# --- checking the trees -------------------------------------------------------------------------------------------------


def check_trees(otel: Otel, ledger: Ledger, ops: int, retry_span: str, attempt_span: str, breaker: str) -> None:
    spans = otel.spans()
    by_op = {s.attributes["op"]: s for s in spans if s.name == "caller"}
    assert sorted(by_op) == list(range(ops))
    total_attempts = sum(ledger.attempts.values())
    assert len(spans) == 2 * ops + 2 * total_attempts  # caller + retry per op, attempt + breaker per attempt
    results: Counter[str] = Counter()
    calls: Counter[tuple[str, str]] = Counter()
    events = 0
    for op, caller in by_op.items():
        (operation,) = children(spans, caller)
        assert operation.name == retry_span
        attempts = children(spans, operation)
        made = ledger.attempts[op]
        assert [a.name for a in attempts] == [attempt_span] * made
        assert [a.attributes[semconv.RETRY_ATTEMPT] for a in attempts] == list(range(1, made + 1))
        assert operation.attributes[semconv.RETRY_ATTEMPTS] == made
        expected = semconv.RESULT_SUCCESS if ledger.outcomes[op] == "ok" else semconv.RESULT_EXHAUSTED
        assert operation.attributes[semconv.RETRY_RESULT] == expected
        results[expected] += 1
        for number, attempt in enumerate(attempts, start=1):
            (call,) = children(spans, attempt)
            assert call.name == f"{semconv.BREAKER_SPAN_PREFIX} {breaker}"
            assert children(spans, call) == []
            result = call.attributes[semconv.BREAKER_RESULT]
            current_inside = ledger.ran.get((op, number))
            if current_inside is None:
                assert result == semconv.CALL_REJECTED  # the dependency did not run
            else:
                assert result in (semconv.CALL_SUCCESS, semconv.CALL_FAILURE)  # it ran
                assert current_inside == call.context.span_id  # and this call's span was current there
            state_changes = [
                (e.attributes[semconv.BREAKER_PREVIOUS_STATE], e.attributes[semconv.BREAKER_STATE])
                for e in call.events
                if e.name == semconv.BREAKER_STATE_CHANGE_EVENT
            ]
            assert state_changes == ledger.transitions.get((op, number), [])  # its own changes, nobody else's
            events += len(state_changes)
            calls[(call.attributes[semconv.BREAKER_STATE], result)] += 1
    assert sum(len(t) for t in ledger.transitions.values()) == events
    assert sum(v for (_, r), v in calls.items() if r != semconv.CALL_REJECTED) == len(ledger.ran)

    retry_points = otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS)
    assert sum(p.count for p in retry_points) == ops and sum(p.sum for p in retry_points) == total_attempts
    assert point_counts(otel, semconv.METRIC_RETRY_ATTEMPTS, semconv.RETRY_RESULT) == {(r,): n for r, n in results.items()}
    assert point_counts(otel, semconv.METRIC_BREAKER_CALLS, semconv.BREAKER_STATE, semconv.BREAKER_RESULT) == calls
    transitions = point_counts(otel, semconv.METRIC_BREAKER_TRANSITIONS, semconv.BREAKER_PREVIOUS_STATE, semconv.BREAKER_STATE)
    assert transitions == Counter(t for changes in ledger.transitions.values() for t in changes)
    # The test exercised what it is about: trips, rejections and recoveries, many times over.
    assert transitions[(semconv.STATE_CLOSED, semconv.STATE_OPEN)] >= 3
    assert sum(n for (_, state), n in transitions.items() if state == semconv.STATE_CLOSED) >= 3, transitions
    assert sum(v for (_, r), v in calls.items() if r == semconv.CALL_REJECTED) >= 3


# --- threads ------------------------------------------------------------------------------------------------------------


def test_threads_retrying_through_a_shared_breaker(both: Otel, ticking_clock: None) -> None:
    ledger = Ledger()
    breaker = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=5, name="shared", listeners=[ledger.listener()])
    tracer = both.tracer_provider.get_tracer("app")

    def dependency(op: int, attempt: int) -> str:
        ledger.dependency_ran(op, attempt)
        if attempt <= fails_first(op):
            raise ConnectionError(f"op {op} attempt {attempt}")
        return f"answer {op}"

    @tenacity.retry(**retrying_kwargs())
    def fetch(op: int) -> str:
        attempt = ledger.attempt(op)
        _ATTEMPT.set(attempt)
        return breaker.call(dependency, op, attempt)

    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            for j in range(OPS_PER_THREAD):
                op = index * OPS_PER_THREAD + j
                _OP.set(op)
                with tracer.start_as_current_span("caller", attributes={"op": op}):
                    try:
                        fetch(op)
                        ledger.outcomes[op] = "ok"
                    except tenacity.RetryError:
                        ledger.outcomes[op] = "exhausted"
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_GUARD)
        assert not thread.is_alive(), "a worker hung"
    assert errors == []
    check_trees(both, ledger, THREADS * OPS_PER_THREAD, "retry test_threads_retrying_through_a_shared_breaker.<locals>.fetch",
                "test_threads_retrying_through_a_shared_breaker.<locals>.fetch", "shared")


# --- asyncio tasks --------------------------------------------------------------------------------------------------------


async def test_tasks_retrying_through_a_shared_breaker_block(both: Otel, ticking_clock: None) -> None:
    """Tasks interleave inside ``with breaker.calling():`` blocks (the body awaits), so many calls through one
    breaker are in flight at once in one thread: each call's span and state changes must stay its own."""
    ledger = Ledger()
    breaker = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=5, name="shared", listeners=[ledger.listener()])
    tracer = both.tracer_provider.get_tracer("app")

    async def dependency(op: int, attempt: int) -> str:
        await asyncio.sleep(0)
        ledger.dependency_ran(op, attempt)
        await asyncio.sleep(0)
        if attempt <= fails_first(op):
            raise ConnectionError(f"op {op} attempt {attempt}")
        return f"answer {op}"

    @tenacity.retry(**retrying_kwargs())
    async def fetch(op: int) -> str:
        attempt = ledger.attempt(op)
        _ATTEMPT.set(attempt)
        with breaker.calling():
            return await dependency(op, attempt)

    async def task(op: int) -> None:
        _OP.set(op)
        with tracer.start_as_current_span("caller", attributes={"op": op}):
            try:
                await fetch(op)
                ledger.outcomes[op] = "ok"
            except tenacity.RetryError:
                ledger.outcomes[op] = "exhausted"

    await asyncio.wait_for(asyncio.gather(*(task(op) for op in range(TASKS))), HANG_GUARD)
    check_trees(both, ledger, TASKS, "retry test_tasks_retrying_through_a_shared_breaker_block.<locals>.fetch",
                "test_tasks_retrying_through_a_shared_breaker_block.<locals>.fetch", "shared")


async def test_a_trip_inside_interleaved_blocks_belongs_to_the_block_that_failed(both: Otel) -> None:
    """Task A's ``calling()`` block fails and trips the breaker while task B is inside its own block on the same
    breaker: the trip is A's (event, state and result), and B's span stays clean."""
    breaker = pybreaker.CircuitBreaker(fail_max=1, name="shared")
    tracer = both.tracer_provider.get_tracer("app")
    a_inside, a_done = asyncio.Event(), asyncio.Event()

    async def a() -> None:
        with tracer.start_as_current_span("caller a"), pytest.raises(pybreaker.CircuitBreakerError):
            with breaker.calling():
                a_inside.set()
                await asyncio.sleep(0)
                raise ConnectionError("down")
        a_done.set()

    async def b() -> str:
        await a_inside.wait()
        with tracer.start_as_current_span("caller b"):
            with breaker.calling():
                await a_done.wait()  # A trips the breaker while this block runs
                return "fine"

    _, answer = await asyncio.wait_for(asyncio.gather(a(), b()), HANG_GUARD)
    assert answer == "fine"
    spans = both.spans()
    (call_a,) = children(spans, both.span("caller a"))
    (call_b,) = children(spans, both.span("caller b"))
    assert [(e.name, dict(e.attributes)) for e in call_a.events if e.name == semconv.BREAKER_STATE_CHANGE_EVENT] == [
        (semconv.BREAKER_STATE_CHANGE_EVENT,
         {semconv.BREAKER_PREVIOUS_STATE: semconv.STATE_CLOSED, semconv.BREAKER_STATE: semconv.STATE_OPEN})
    ]
    assert call_a.attributes[semconv.BREAKER_RESULT] == semconv.CALL_FAILURE
    assert call_a.attributes[semconv.BREAKER_STATE] == semconv.STATE_CLOSED
    assert call_b.events == ()
    assert call_b.attributes[semconv.BREAKER_RESULT] == semconv.CALL_SUCCESS
    assert call_b.attributes[semconv.BREAKER_STATE] == semconv.STATE_CLOSED


# --- asyncio tasks through every async-capable breaker ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "library,form", [("circuitbreaker", "async_decorator"), ("aiobreaker", "call_async"), ("purgatory", "async_decorator")]
)
async def test_tasks_through_a_shared_async_breaker(library: str, form: str) -> None:
    """Many tasks call one breaker at once (in waves of concurrent tasks), each awaiting inside the guarded
    coroutine, while the breaker trips and recovers: every call's span sits under its own task's caller span, was current inside its own coroutine, is
    rejected exactly when the coroutine did not run, and the state changes of all calls, in time order, form one
    unbroken chain that the transition metric counts exactly."""
    driver = BREAKERS[library]
    clock = TickingClock()
    ran: dict[int, int] = {}

    async def dependency(op: int) -> int:
        await asyncio.sleep(0)
        ran[op] = trace.get_current_span().get_span_context().span_id
        await asyncio.sleep(0)
        if (op // 10) % 2:
            raise ConnectionError(f"op {op} down")
        return op

    with instrumented(driver.instrumentor) as otel, ExitStack() as patched:
        for owner, name, value in driver.clock_patches(clock):
            patched.enter_context(mock.patch.object(owner, name, value))
        guard = driver.build(Settings(fail_max=3, reset_timeout=5, excluded=()), form, dependency)
        tracer = otel.tracer_provider.get_tracer("app")

        async def task(op: int) -> None:
            clock.advance()  # one second per call, so that an open breaker's timeout runs out after a few
            with tracer.start_as_current_span("caller", attributes={"op": op}):
                try:
                    await guard.call(op)
                except Exception:  # noqa: BLE001 - the breaker's refusals and the dependency's errors
                    pass

        try:
            for wave in range(0, TASKS, WAVE):
                await asyncio.wait_for(asyncio.gather(*(task(op) for op in range(wave, wave + WAVE))), HANG_GUARD)
        finally:
            guard.close()
        spans = otel.spans()
        results: Counter[str] = Counter()
        for caller in (s for s in spans if s.name == "caller"):
            (call,) = children(spans, caller)
            op = caller.attributes["op"]
            result = call.attributes[semconv.BREAKER_RESULT]
            results[result] += 1
            if op in ran:  # an error the breaker did not count (it opened meanwhile) is ignored
                assert result != semconv.CALL_REJECTED and ran[op] == call.context.span_id
            else:
                assert result == semconv.CALL_REJECTED
        assert results.total() == TASKS and len(spans) == 2 * TASKS
        assert results[semconv.CALL_REJECTED] >= 3 and results[semconv.CALL_FAILURE] >= 3  # it tripped, often
        changes = sorted(
            (e for s in spans for e in s.events if e.name == semconv.BREAKER_STATE_CHANGE_EVENT), key=lambda e: e.timestamp
        )
        known = semconv.STATE_CLOSED
        for change in changes:
            assert change.attributes[semconv.BREAKER_PREVIOUS_STATE] == known
            known = change.attributes[semconv.BREAKER_STATE]
        assert point_counts(otel, semconv.METRIC_BREAKER_CALLS, semconv.BREAKER_RESULT) == {(r,): n for r, n in results.items()}
        transitions = sum(p.value for p in otel.metric_points(semconv.METRIC_BREAKER_TRANSITIONS))
        assert transitions in (len(changes), len(changes) + 1)  # + a timer's change first seen by the state gauge
        assert len(changes) >= 3
