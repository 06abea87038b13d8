"""What the breaker tests share, so that every library is held to the same contract the same way: a call span's
summary, the breaker metrics as plain dicts, a controllable clock, the full cycle every library goes through, and
the concurrency and health-snapshot checks."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Final

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from otel_resilience import semconv
from otel_resilience.core import breakers
from tests.conftest import Otel

ERROR, UNSET = StatusCode.ERROR, StatusCode.UNSET


def outcome(fn: Callable[..., Any], *args: Any) -> Any:
    """What the caller gets: the return value, or the exception raised."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - the test looks at what the caller got
        return exc


async def async_outcome(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return await fn(*args)
    except Exception as exc:  # noqa: BLE001
        return exc


def changes(span: ReadableSpan) -> list[tuple[str, str]]:
    """The span's state-change events, as (previous, state)."""
    return [
        (e.attributes[semconv.BREAKER_PREVIOUS_STATE], e.attributes[semconv.BREAKER_STATE])  # type: ignore[index]
        for e in span.events
        if e.name == semconv.BREAKER_STATE_CHANGE_EVENT
    ]


def summary(span: ReadableSpan) -> tuple[Any, ...]:
    """(state, result, error.type, status code, state changes) of a breaker call span."""
    attributes = span.attributes or {}
    return (
        attributes[semconv.BREAKER_STATE],
        attributes[semconv.BREAKER_RESULT],
        attributes.get(semconv.ERROR_TYPE),
        span.status.status_code,
        changes(span),
    )


def breaker_spans(otel: Otel, name: str) -> list[ReadableSpan]:
    return [s for s in otel.spans() if s.name == f"{semconv.BREAKER_SPAN_PREFIX} {name}"]


def transitions(otel: Otel, name: str) -> dict[tuple[str, str], int]:
    """`circuitbreaker.transitions` of one breaker, by (previous, state). Collecting also runs the state gauge."""
    return {
        (p.attributes[semconv.BREAKER_PREVIOUS_STATE], p.attributes[semconv.BREAKER_STATE]): p.value
        for p in otel.metric_points(semconv.METRIC_BREAKER_TRANSITIONS)
        if p.attributes[semconv.BREAKER_NAME] == name and p.value
    }


def calls(otel: Otel, name: str) -> dict[tuple[str, str], int]:
    """`circuitbreaker.calls` of one breaker, by (state, result)."""
    return {
        (p.attributes[semconv.BREAKER_STATE], p.attributes[semconv.BREAKER_RESULT]): p.value
        for p in otel.metric_points(semconv.METRIC_BREAKER_CALLS)
        if p.attributes[semconv.BREAKER_NAME] == name
    }


def gauge(otel: Otel, name: str) -> dict[str, int]:
    """The `circuitbreaker.state` gauge of one breaker: 1 for its state, 0 for the others."""
    return {
        p.attributes[semconv.BREAKER_STATE]: p.value
        for p in otel.metric_points(semconv.METRIC_BREAKER_STATE)
        if p.attributes[semconv.BREAKER_NAME] == name
    }


class Clock:
    """A breaker library's clock, moved by the test instead of slept through: callable (``monotonic``) and with a
    ``time()`` method (standing in for the ``time`` module a library imported)."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- the full cycle every breaker test runs: closed → open (trip) → rejected → half_open probe fails → open →
# half_open probe succeeds → closed → closed

CYCLE_CALLS: Final = {
    ("closed", "failure"): 2, ("open", "rejected"): 1, ("half_open", "failure"): 1, ("half_open", "success"): 1,
    ("closed", "success"): 1,
}
CYCLE_TRANSITIONS: Final = {
    ("closed", "open"): 1, ("open", "half_open"): 2, ("half_open", "open"): 1, ("half_open", "closed"): 1,
}


def cycle(*, tripped: str, refused: str, failure: str = "ConnectionError") -> list[tuple[Any, ...]]:
    """The six call spans of the cycle: `tripped` is what the caller gets from the tripping call and a failing
    probe (the original error, or the library's own), `refused` what a refused call is described by."""
    return [
        ("closed", "failure", failure, ERROR, []),
        ("closed", "failure", tripped, ERROR, [("closed", "open")]),
        ("open", "rejected", refused, ERROR, []),
        ("half_open", "failure", tripped, ERROR, [("open", "half_open"), ("half_open", "open")]),
        ("half_open", "success", None, UNSET, [("open", "half_open"), ("half_open", "closed")]),
        ("closed", "success", None, UNSET, []),
    ]


def run_cycle(call: Callable[[bool], Any], pass_timeout: Callable[[], None]) -> list[Any]:
    """Drive the cycle through `call(fail)` (threshold 2); `pass_timeout` moves the breaker past its timeout."""
    seen = [outcome(call, True), outcome(call, True), outcome(call, False)]
    pass_timeout()
    seen.append(outcome(call, True))
    pass_timeout()
    seen += [outcome(call, False), outcome(call, False)]
    return seen


async def run_async_cycle(call: Callable[[bool], Awaitable[Any]], pass_timeout: Callable[[], None]) -> list[Any]:
    seen = [await async_outcome(call, True), await async_outcome(call, True), await async_outcome(call, False)]
    pass_timeout()
    seen.append(await async_outcome(call, True))
    pass_timeout()
    seen += [await async_outcome(call, False), await async_outcome(call, False)]
    return seen


def assert_cycle(otel: Otel, name: str, expected: list[tuple[Any, ...]], failure_counts: list[int | None]) -> None:
    """The cycle's spans (one per user call, nothing else), their failure counts, and its metric points."""
    spans = breaker_spans(otel, name)
    assert len(spans) == len(otel.spans()) == 6
    assert [summary(s) for s in spans] == expected
    assert all(s.kind is SpanKind.INTERNAL and s.attributes[semconv.BREAKER_NAME] == name for s in spans)
    counts = [s.attributes.get(semconv.BREAKER_FAILURE_COUNT) for s in spans]
    assert counts == failure_counts and all(c is None or type(c) is int for c in counts)
    assert calls(otel, name) == CYCLE_CALLS
    assert transitions(otel, name) == CYCLE_TRANSITIONS
    assert gauge(otel, name) == {"closed": 1, "open": 0, "half_open": 0}


# --- concurrency -------------------------------------------------------------------------------------------------


def run_in_threads(otel: Otel, name: str, call: Callable[[int], Any], threads: int = 8, each: int = 100) -> None:
    """`call(i)` from many threads, each call under its own caller span: one breaker span per call, each under
    the caller it was made from."""
    tracer = otel.tracer_provider.get_tracer("app")

    def worker(n: int) -> None:
        for i in range(each):
            with tracer.start_as_current_span(f"caller {n}"):
                outcome(call, i)

    started = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in started:
        t.start()
    for t in started:
        t.join()
    spans = breaker_spans(otel, name)
    assert len(spans) == threads * each
    callers = {s.context.span_id for s in otel.spans() if s.name.startswith("caller")}
    assert all(s.parent.span_id in callers for s in spans)


async def run_in_tasks(
    otel: Otel, name: str, guard: Callable[[Callable[[int], Awaitable[int]]], Callable[[int], Awaitable[int]]]
) -> None:
    """Many asyncio tasks through one breaker (`guard` applies it to the work): every call is one span, under its
    own task's span, and the work's own span is that call's child."""
    tracer = otel.tracer_provider.get_tracer("app")

    async def work(i: int) -> int:
        await asyncio.sleep(0)
        with tracer.start_as_current_span(f"inside {i}"):
            await asyncio.sleep(0)
        return i

    guarded = guard(work)

    async def task(n: int) -> None:
        with tracer.start_as_current_span(f"task {n}"):
            for i in range(10):
                assert await guarded(n * 100 + i) == n * 100 + i

    await asyncio.gather(*(task(n) for n in range(50)))
    assert len(breaker_spans(otel, name)) == 500
    by_id = {s.context.span_id: s for s in otel.spans()}
    for inside in (s for s in otel.spans() if s.name.startswith("inside")):
        call = by_id[inside.parent.span_id]
        assert call.name == f"{semconv.BREAKER_SPAN_PREFIX} {name}"
        assert by_id[call.parent.span_id].name == f"task {int(inside.name.split()[1]) // 100}"
    assert calls(otel, name) == {("closed", "success"): 500}


def assert_snapshot_then_forgotten(library: str, tripped: Callable[[], object], name: str, failure_count: int) -> None:
    """The health snapshot lists a breaker `tripped()` just opened, and forgets it once it is collected (weak)."""
    breaker = tripped()
    (snapshot,) = [b for b in breakers() if b["name"] == name]
    assert snapshot == {
        "name": name, "library": library, "state": "open", "failure_count": failure_count,
        "last_transition": snapshot["last_transition"],
    }
    assert isinstance(snapshot["last_transition"], float)
    del breaker
    gc.collect()
    assert [b for b in breakers() if b["name"] == name] == []
