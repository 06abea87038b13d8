"""Helpers shared by the cross-cutting evidence tests (properties, concurrency, faults, memory).

Those tests compare what an app sees with and without instrumentation, many times over, so they make their own
short-lived providers instead of the per-test `otel` fixture (hypothesis runs many examples per test function).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, settings
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_resilience.core import _safety
from tests.conftest import Otel

PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,  # nothing written into the work tree
    derandomize=True,  # the same examples on every run: a failure here is reproducible as is
    suppress_health_check=[HealthCheck.too_slow],
)
"""Modest and deterministic, so the whole property suite stays fast."""


def fresh_otel() -> Otel:
    """Real SDK providers with an in-memory exporter and reader (the `otel` fixture's, made per example)."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return Otel(tracer_provider, MeterProvider(metric_readers=[reader]), exporter, reader)


@contextmanager
def instrumented(instrumentor: type[BaseInstrumentor], otel: Otel | None = None) -> Iterator[Otel]:
    """`instrumentor` switched on with `otel`'s providers (fresh ones by default) for the block, then off again."""
    otel = otel or fresh_otel()
    instrumentor().instrument(**otel.kwargs())
    try:
        yield otel
    finally:
        instrumentor().uninstrument()
        otel.tracer_provider.shutdown()
        otel.meter_provider.shutdown()


def children(spans: Iterable[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """The spans whose parent is `parent`, in start order."""
    parent_id = parent.context.span_id
    found = [s for s in spans if s.parent is not None and s.parent.span_id == parent_id]
    return sorted(found, key=lambda s: s.start_time or 0)


def point_counts(otel: Otel, metric: str, *keys: str) -> Counter[tuple[Any, ...]]:
    """The metric's points as {(attribute values for `keys`): value} (a counter's value, a histogram's count)."""
    counts: Counter[tuple[Any, ...]] = Counter()
    for point in otel.metric_points(metric):
        amount = getattr(point, "count", None)
        counts[tuple(point.attributes.get(k) for k in keys)] += point.value if amount is None else amount
    return counts


def describe(exc: BaseException | None, raised: list[BaseException]) -> tuple[Any, ...] | None:
    """What the app can observe of an exception, comparable across two runs: the index of the very object the
    guarded code raised (identity), else its type and message, with what it was raised from."""
    if exc is None:
        return None
    for index, candidate in enumerate(raised):
        if exc is candidate:
            return ("raised", index)
    last_attempt = getattr(exc, "last_attempt", None)
    wrapped: Any = None
    if isinstance(last_attempt, Future):  # tenacity's RetryError: its message shows the future's address
        wrapped = describe(last_attempt.exception(), raised) if last_attempt.failed else ("value", last_attempt.result())
    elif hasattr(last_attempt, "has_exception"):  # retrying's RetryError: its message quotes the formatted traceback
        error = last_attempt.value[1] if last_attempt.has_exception else None
        wrapped = (describe(error, raised) if error is not None else ("value", last_attempt.value), last_attempt.attempt_number)
    if wrapped is not None:
        return (type(exc), wrapped, _shallow(exc.__cause__, raised), _shallow(exc.__context__, raised))
    return (type(exc), str(exc), _shallow(exc.__cause__, raised), _shallow(exc.__context__, raised))


def _shallow(exc: BaseException | None, raised: list[BaseException]) -> tuple[Any, ...] | None:
    if exc is None:
        return None
    for index, candidate in enumerate(raised):
        if exc is candidate:
            return ("raised", index)
    return (type(exc), str(exc))


# --- deterministic workloads: what an app does, described so that two runs can be compared ---------------------------


class TickingClock:
    """A library's clock under the test's control, so breakers trip, wait out their timeout, probe and close again
    without anybody sleeping. With `per_read` every reading is one second after the last (thread-safe: `next` on a
    count), for tests where many threads share a breaker; otherwise it moves only when `advance()` is called, so
    that extra readings (an adapter reading a state property that consults the clock) change nothing."""

    def __init__(self, *, per_read: bool = False) -> None:
        self._ticks = itertools.count()
        self._per_read = per_read
        self._now = 0
        self._start = datetime(2024, 1, 1)

    def advance(self, seconds: int = 1) -> None:
        self._now += seconds

    def seconds(self) -> float:
        """For a library that reads ``time.monotonic()`` or ``time.time()``."""
        return float(next(self._ticks) if self._per_read else self._now)

    def datetime_class(self) -> type[datetime]:
        """For a library that reads ``datetime.now()`` or ``datetime.utcnow()`` (naive, so that values compare
        whichever of the two a library mixes)."""
        clock = self

        class TickingDatetime(datetime):
            @classmethod
            def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
                return clock._start + timedelta(seconds=clock.seconds())

            @classmethod
            def utcnow(cls) -> datetime:  # type: ignore[override]
                return cls.now()

        return TickingDatetime


def _flaky(calls: Counter[int], op: int) -> int:
    """A retried function's body: operation `op` fails ``op % 4`` times with an error retry policies retry, then
    answers, except every seventh, which fails with an error they do not retry."""
    calls[op] += 1
    if calls[op] <= op % 4:
        raise ConnectionError(f"op {op} down")
    if op % 7 == 6:
        raise KeyError(op)
    return op * 2


def tenacity_workload(ops: int) -> list[Any]:
    """`ops` calls of one retried function: some succeed at once, some after one or two failures, some exhaust the
    policy, some fail with an error it does not retry. Returns what the app saw of each, with attempts and waits."""
    import tenacity

    calls: Counter[int] = Counter()
    waits: list[float] = []

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_exponential(multiplier=0.5),
        retry=tenacity.retry_if_exception_type(ConnectionError),
        sleep=waits.append,
    )
    def fetch(op: int) -> int:
        return _flaky(calls, op)

    seen: list[Any] = []
    for op in range(ops):
        try:
            seen.append(("ok", fetch(op)))
        except tenacity.RetryError as exc:
            seen.append(("RetryError", repr(exc.last_attempt.exception())))
        except Exception as exc:  # noqa: BLE001 - what the app saw
            seen.append((type(exc).__name__, str(exc)))
    return [seen, dict(calls), waits]


def pybreaker_workload(ops: int) -> list[Any]:
    """`ops` calls through one breaker whose dependency fails in bursts: trips, rejections, probes, recoveries
    (its clock ticks one second per reading). Returns each call's outcome and the breaker's state after it."""
    import pybreaker

    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=3, name="workload")
    ran: list[int] = []

    def dependency(op: int) -> int:
        ran.append(op)
        if (op // 5) % 2:
            raise ConnectionError(f"op {op} down")
        return op

    clock = TickingClock()
    with mock.patch.object(pybreaker, "datetime", clock.datetime_class()):
        seen = _outcomes(ops, lambda op: breaker.call(dependency, op), lambda: (breaker._state.name, breaker.fail_counter), clock)
    return [seen, ran]


def _bursty(op: int) -> int:
    """A breaker's dependency: fails in bursts of five calls."""
    if (op // 5) % 2:
        raise ConnectionError(f"op {op} down")
    return op


def _outcomes(
    ops: int, call: Callable[[int], Any], state: Callable[[], Any], clock: TickingClock | None = None
) -> list[Any]:
    """What the app saw of ``call(op)`` for each op (the value, or the error's type and message) and `state()`
    after it; `clock` moves one second per call."""
    seen: list[Any] = []
    for op in range(ops):
        if clock is not None:
            clock.advance()
        try:
            outcome: Any = ("ok", call(op))
        except Exception as exc:  # noqa: BLE001 - what the app saw
            outcome = (type(exc).__name__, str(exc))
        seen.append((outcome, state()))
    return seen


def backoff_workload(ops: int) -> list[Any]:
    """backoff's on_exception and on_predicate with a recorded sleep and a ticking clock (decorated in the
    workload, so after instrumentation when instrumented)."""
    import backoff
    import backoff._sync

    calls: Counter[int] = Counter()
    waits: list[float] = []

    @backoff.on_exception(backoff.expo, ConnectionError, max_tries=3, jitter=None)
    def fetch(op: int) -> int:
        return _flaky(calls, op)

    @backoff.on_predicate(backoff.constant, lambda value: value is None, max_tries=2, interval=0.5, jitter=None)
    def poll(op: int) -> int | None:
        calls[-op - 1] += 1
        return None if op % 3 == 0 else op

    fake_time = SimpleNamespace(sleep=waits.append)
    fake_datetime = SimpleNamespace(datetime=TickingClock(per_read=True).datetime_class())
    with mock.patch.object(backoff._sync, "time", fake_time), mock.patch.object(backoff._sync, "datetime", fake_datetime):
        seen = _outcomes(ops, fetch, lambda: None) + _outcomes(ops, poll, lambda: None)
    return [seen, dict(calls), waits]


def retrying_workload(ops: int) -> list[Any]:
    """retrying's decorator with an attempt limit, a fixed wait (recorded, not slept) and an error it does not
    retry."""
    import retrying

    calls: Counter[int] = Counter()
    waits: list[float] = []

    @retrying.retry(
        stop_max_attempt_number=3, wait_fixed=500, retry_on_exception=lambda exc: isinstance(exc, ConnectionError)
    )
    def fetch(op: int) -> int:
        return _flaky(calls, op)

    clock = TickingClock(per_read=True)
    with mock.patch.object(retrying, "time", SimpleNamespace(sleep=waits.append, time=clock.seconds)):
        seen = _outcomes(ops, fetch, lambda: None)
    return [seen, dict(calls), waits]


def forget_circuitbreaker(name: str) -> None:
    """circuitbreaker keeps every breaker it decorated with in a class-level monitor, by name, for the life of the
    process: drop one of ours, so that tests reading the health snapshot later see only their own breakers."""
    import circuitbreaker

    circuitbreaker.CircuitBreakerMonitor.circuit_breakers.pop(name, None)


def circuitbreaker_workload(ops: int) -> list[Any]:
    import circuitbreaker

    breaker = circuitbreaker.CircuitBreaker(failure_threshold=2, recovery_timeout=3, name="workload")
    guarded = breaker(_bursty)
    clock = TickingClock()
    try:
        with mock.patch.object(circuitbreaker, "monotonic", clock.seconds), mock.patch.object(
            circuitbreaker, "datetime", clock.datetime_class()
        ):
            return _outcomes(ops, guarded, lambda: (breaker._state, breaker.failure_count), clock)
    finally:
        forget_circuitbreaker("workload")


def purgatory_workload(ops: int) -> list[Any]:
    import purgatory
    import purgatory.domain.model

    factory = purgatory.SyncCircuitBreakerFactory(default_threshold=2, default_ttl=3)
    guarded = factory("workload")(_bursty)
    clock = TickingClock()
    with mock.patch.object(purgatory.domain.model, "time", SimpleNamespace(time=clock.seconds)):
        return _outcomes(ops, guarded, lambda: None, clock)


def aiobreaker_workload(ops: int) -> list[Any]:
    import aiobreaker
    import aiobreaker.circuitbreaker
    import aiobreaker.state

    breaker = aiobreaker.CircuitBreaker(fail_max=2, timeout_duration=timedelta(seconds=3), name="workload")

    async def dependency(op: int) -> int:
        await asyncio.sleep(0)
        return _bursty(op)

    clock = TickingClock()

    async def calls() -> list[Any]:
        seen: list[Any] = []
        for op in range(ops):
            clock.advance()
            try:
                outcome: Any = ("ok", await breaker.call_async(dependency, op))
            except Exception as exc:  # noqa: BLE001 - what the app saw
                outcome = (type(exc).__name__, str(exc))
            seen.append((outcome, breaker.current_state.name, breaker.fail_counter))
        return seen

    ticking = clock.datetime_class()
    with mock.patch.object(aiobreaker.circuitbreaker, "datetime", ticking), mock.patch.object(
        aiobreaker.state, "datetime", ticking
    ):
        return asyncio.run(calls())


WORKLOADS: dict[str, Callable[[int], list[Any]]] = {
    "tenacity": tenacity_workload,
    "backoff": backoff_workload,
    "retrying": retrying_workload,
    "pybreaker": pybreaker_workload,
    "circuitbreaker": circuitbreaker_workload,
    "purgatory": purgatory_workload,
    "aiobreaker": aiobreaker_workload,
}
"""Per library name: a deterministic workload of `ops` calls returning everything the app observed."""


def run_workloads(ops: int) -> dict[str, Any]:
    return {name: workload(ops) for name, workload in WORKLOADS.items()}


def internal_error_places(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Where each logged internal error of ours happened (the `where` of `report_internal_error`)."""
    return [
        str(record.args[0])  # type: ignore[index]
        for record in caplog.records
        if record.name == "otel_resilience" and "internal error" in record.getMessage()
    ]


def assert_injected_failure_reported(caplog: pytest.LogCaptureFixture, failure: str) -> None:
    """A failure injected into our code (its message contains `failure`) was reached, and logged once per place
    where it surfaced, never once per call."""
    places = internal_error_places(caplog)
    assert places, "the injected failure was never reached"
    assert len(places) == len(set(places))
    for record in caplog.records:
        if record.name == "otel_resilience" and record.exc_info:
            assert failure in str(record.exc_info[1])


def runs_with_injected_failure(
    otel: Otel,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    target: tuple[Any, str],
    instrumentors: Sequence[type[Any]],
    run: Callable[[], Any],
) -> list[Any]:
    """`run()` twice with `instrumentors` instrumented (against `otel`) while ``owner.name``
    (`target`) raises: what the app saw each time. The failure must have been reached and logged once per place."""
    owner, name = target
    failure = f"injected failure in {name}"

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(failure)

    monkeypatch.setattr(_safety, "_reported", set())
    monkeypatch.setattr(owner, name, broken)
    for instrumentor in instrumentors:
        instrumentor().instrument(**otel.kwargs())
    try:
        with caplog.at_level(logging.WARNING, logger="otel_resilience"):
            results = [run(), run()]
    finally:
        for instrumentor in reversed(instrumentors):
            instrumentor().uninstrument()
    assert_injected_failure_reported(caplog, failure)
    return results
