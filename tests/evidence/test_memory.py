"""Memory stays flat under load: spans keep no library state or exception frames alive, and the breaker registry
keeps no breaker alive.

100k retried calls (tenacity: every call fails once, waits, then succeeds: two attempt spans and an operation span
each) and 100k calls through a breaker that trips and recovers, with an exporter that drops every span, must leave
the interpreter's allocated memory blocks and the number of live objects where they were after a warm-up (generous bounds: a leak of one
small object per call would be 100k objects, far above them). No timing assertions.
"""

from __future__ import annotations

import gc
import sys
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from unittest import mock

import pybreaker
import pytest
import tenacity
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from otel_resilience import semconv
from otel_resilience.core.registry import REGISTRY
from otel_resilience.instrumentation.pybreaker import PyBreakerInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from tests.conftest import Otel
from tests.support.evidence import TickingClock, fresh_otel, instrumented

CALLS = 100_000
WARM_UP = 2_000
MAX_NEW_BLOCKS = 5_000
"""Memory blocks the whole run may add after the warm-up (a leak of one block per 20 calls would exceed it)."""
MAX_NEW_OBJECTS = 2_000
"""Live objects the whole run may add after the warm-up (a leak of one object per 50 calls would exceed it)."""


class DroppingExporter(SpanExporter):
    """Exports by forgetting: whatever stays alive after a span ended is kept by something else."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


@pytest.fixture
def dropping() -> Iterator[tuple[Otel, DroppingExporter]]:
    exporter = DroppingExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    otel = Otel(tracer_provider, MeterProvider(metric_readers=[reader]), None, reader)  # type: ignore[arg-type]
    yield otel, exporter
    tracer_provider.shutdown()
    otel.meter_provider.shutdown()


def growth(run: Callable[[int], None]) -> tuple[int, Counter[str]]:
    """Memory blocks and live objects (by type) that `run(CALLS)` adds, measured after `run(WARM_UP)`.
    ``sys.getallocatedblocks()`` counts every block the interpreter's allocator holds (objects, and the buffers of
    strings and containers), at no cost per allocation, unlike tracemalloc, which would make this test minutes long."""
    run(WARM_UP)
    gc.collect()
    before_objects = Counter(type(o).__name__ for o in gc.get_objects())
    before = sys.getallocatedblocks()
    run(CALLS)
    gc.collect()
    after = sys.getallocatedblocks()
    after_objects = Counter(type(o).__name__ for o in gc.get_objects())
    return after - before, after_objects - before_objects


def test_retried_calls_keep_nothing_alive(dropping: tuple[Otel, DroppingExporter]) -> None:
    otel, exporter = dropping
    failed_once: set[int] = set()

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(0.1), sleep=lambda _: None)
    def fetch(key: int) -> int:
        if key not in failed_once:
            failed_once.add(key)
            raise ConnectionError(f"key {key} down")
        return key

    def run(calls: int) -> None:
        for key in range(calls):
            assert fetch(key) == key
        failed_once.clear()

    TenacityInstrumentor().instrument(**otel.kwargs())
    try:
        grown, new_objects = growth(run)
    finally:
        TenacityInstrumentor().uninstrument()
    assert exporter.spans == 3 * (CALLS + WARM_UP)  # operation + two attempts per call: instrumentation was live
    assert grown < MAX_NEW_BLOCKS, f"{grown} blocks kept: {new_objects.most_common(8)}"
    assert sum(new_objects.values()) < MAX_NEW_OBJECTS, new_objects.most_common(8)
    for kind in ("ConnectionError", "RetryCallState", "Future", "frame", "traceback", "_Span", "RetryOperation"):
        assert new_objects[kind] < 10, (kind, new_objects[kind])


def test_breaker_calls_keep_nothing_alive(dropping: tuple[Otel, DroppingExporter]) -> None:
    otel, exporter = dropping
    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=3, name="memory")
    clock = TickingClock()

    def dependency(op: int) -> int:
        if (op // 5) % 2:
            raise ConnectionError(f"op {op} down")
        return op

    def run(calls: int) -> None:
        for op in range(calls):
            clock.advance()
            try:
                breaker.call(dependency, op)
            except (ConnectionError, pybreaker.CircuitBreakerError):
                pass

    PyBreakerInstrumentor().instrument(**otel.kwargs())
    try:
        with mock.patch.object(pybreaker, "datetime", clock.datetime_class()):
            grown, new_objects = growth(run)
    finally:
        PyBreakerInstrumentor().uninstrument()
    assert exporter.spans == CALLS + WARM_UP
    transitions = otel.metric_points(semconv.METRIC_BREAKER_TRANSITIONS)
    assert sum(p.value for p in transitions) > CALLS // 10  # it tripped and recovered all along
    assert grown < MAX_NEW_BLOCKS, f"{grown} blocks kept: {new_objects.most_common(8)}"
    assert sum(new_objects.values()) < MAX_NEW_OBJECTS, new_objects.most_common(8)
    for kind in ("ConnectionError", "CircuitBreakerError", "frame", "traceback", "_Span", "BreakerCall"):
        assert new_objects[kind] < 10, (kind, new_objects[kind])


def test_spans_keep_no_exception_or_library_state_alive() -> None:
    """Even with every span kept (an in-memory exporter), the exceptions the attempts raised, tenacity's retry
    state and the breaker's error objects are collectable once the calls returned: spans hold strings and numbers."""
    kept: list[weakref.ref[Any]] = []

    def failing_then(value: str) -> Callable[[], str]:
        calls = [0]

        def attempt() -> str:
            calls[0] += 1
            if calls[0] == 1:
                error = ConnectionError("down once")
                kept.append(weakref.ref(error))
                raise error
            return value

        return attempt

    def remember_state(retry_state: tenacity.RetryCallState) -> None:
        kept.append(weakref.ref(retry_state))

    breaker = pybreaker.CircuitBreaker(fail_max=1, name="kept")
    with instrumented(TenacityInstrumentor, fresh_otel()) as otel, instrumented(PyBreakerInstrumentor, otel):
        retrying = tenacity.Retrying(wait=tenacity.wait_none(), sleep=lambda _: None, after=remember_state)
        assert retrying(failing_then("ok")) == "ok"
        try:
            breaker.call(failing_then("never"))
        except pybreaker.CircuitBreakerError as error:
            kept.append(weakref.ref(error))
        try:
            breaker.call(failing_then("never"))  # refused: open
        except pybreaker.CircuitBreakerError as error:
            kept.append(weakref.ref(error))
        kept.append(weakref.ref(retrying))
        del retrying
        gc.collect()
        assert len(otel.spans()) == 5  # retry, two attempts, two breaker calls: all still held by the exporter
        assert [ref() for ref in kept] == [None] * len(kept)


def test_registry_keeps_no_breaker_alive(otel: Otel) -> None:
    PyBreakerInstrumentor().instrument(**otel.kwargs())
    try:
        refs = []
        for index in range(1_000):
            breaker = pybreaker.CircuitBreaker(name=f"short-lived {index}")
            breaker.call(lambda: None)
            refs.append(weakref.ref(breaker))
        assert any(e.name == "short-lived 999" for e in REGISTRY.live_entries("pybreaker"))
        del breaker
        gc.collect()
        assert [ref() for ref in refs] == [None] * len(refs)
        assert not any(e.name.startswith("short-lived") for e in REGISTRY.live_entries("pybreaker"))
        assert not any(e.name.startswith("short-lived") for e in REGISTRY._entries.values())  # purged, not just dead
    finally:
        PyBreakerInstrumentor().uninstrument()
