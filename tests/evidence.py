"""Helpers shared by the cross-cutting evidence tests (properties, concurrency, faults, memory).

Those tests compare what an app sees with and without instrumentation, many times over, so they make their own
short-lived providers instead of the per-test `otel` fixture (hypothesis runs many examples per test function).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, settings
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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
    if isinstance(last_attempt, Future):  # tenacity's RetryError: its message shows the future's address
        wrapped = describe(last_attempt.exception(), raised) if last_attempt.failed else ("value", last_attempt.result())
        return (type(exc), wrapped, _shallow(exc.__cause__, raised), _shallow(exc.__context__, raised))
    return (type(exc), str(exc), _shallow(exc.__cause__, raised), _shallow(exc.__context__, raised))


def _shallow(exc: BaseException | None, raised: list[BaseException]) -> tuple[Any, ...] | None:
    if exc is None:
        return None
    for index, candidate in enumerate(raised):
        if exc is candidate:
            return ("raised", index)
    return (type(exc), str(exc))
