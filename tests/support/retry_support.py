"""Helpers shared by the tests of the retry libraries (tenacity, backoff, retrying, stamina)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from otel_resilience import semconv
from tests.support import _targets_support
from tests.support._targets_support import by_name
from tests.conftest import Otel

__all__ = ["Flaky", "AsyncFlaky", "Sleeps", "by_name", "fetch_in_threads", "operation_and_attempts", "exception_events", "metric_summary"]


class Flaky(_targets_support.Flaky):
    """Fails `failures` times with `error`, then returns `value`; counts calls, keeps every exception it raised."""

    def __init__(self, failures: int, value: Any = "ok", error: type[BaseException] = ConnectionError) -> None:
        super().__init__(failures, value, error)
        self.__name__ = type(self).__name__  # backoff's default log handlers print the target's __name__


class AsyncFlaky(Flaky):
    async def __call__(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return super().__call__(*args, **kwargs)


class Sleeps:
    """Stands in for a library's sleep: records each requested wait and returns at once (tests never sleep)."""

    def __init__(self, clock: Callable[[float], None] | None = None) -> None:
        self.waits: list[float] = []
        self._clock = clock

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self._clock is not None:
            self._clock(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


def operation_and_attempts(otel: Otel, qualname: str) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The one operation span ``retry {qualname}`` and its attempt spans in attempt order, checking their shape."""
    op = otel.span(f"retry {qualname}")
    attempts = sorted(by_name(otel, qualname), key=lambda s: s.attributes[semconv.RETRY_ATTEMPT])
    assert [a.attributes[semconv.RETRY_ATTEMPT] for a in attempts] == list(range(1, len(attempts) + 1))
    for attempt in attempts:
        assert attempt.parent is not None and attempt.parent.span_id == op.context.span_id
        assert attempt.context.trace_id == op.context.trace_id
        assert attempt.kind is SpanKind.INTERNAL
        assert op.start_time <= attempt.start_time <= attempt.end_time <= op.end_time
    for earlier, later in zip(attempts, attempts[1:]):
        assert earlier.end_time <= later.start_time
    assert op.kind is SpanKind.INTERNAL
    return op, attempts


def exception_events(span: ReadableSpan) -> list[dict[str, Any]]:
    return [dict(e.attributes) for e in span.events if e.name == semconv.EXCEPTION_EVENT]


def metric_summary(otel: Otel, name: str) -> list[tuple[dict[str, Any], int, float]]:
    """(attributes, count, sum) of each data point of a histogram, sorted for comparison."""
    points = [(dict(p.attributes), p.count, p.sum) for p in otel.metric_points(name)]
    return sorted(points, key=lambda p: sorted(p[0].items()))


def fetch_in_threads(retried: Callable[[Callable[[int], int]], Callable[[int], int]], threads: int = 4) -> tuple[dict[int, int], str]:
    """Run ``retried(fetch_user)(n)`` in `threads` threads at once (thread n fails n times, all meet at a barrier
    during their first attempt); returns what each thread got and fetch_user's qualname."""
    barrier = threading.Barrier(threads)
    local = threading.local()

    def fetch_user(failures: int) -> int:
        local.n = getattr(local, "n", 0) + 1
        if local.n == 1:
            barrier.wait(timeout=10)
        if local.n <= failures:
            raise ConnectionError("down")
        return failures

    call = retried(fetch_user)
    results: dict[int, int] = {}
    workers = [threading.Thread(target=lambda n=n: results.__setitem__(n, call(n))) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=10)
    return results, fetch_user.__qualname__
