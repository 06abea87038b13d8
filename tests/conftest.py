"""Shared fixtures: real SDK providers with an in-memory span exporter and metric reader, per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.collector import RotelCollector, collector_or_skip


@dataclass
class Otel:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        """Finished spans, in the order they ended."""
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        matches = [s for s in self.spans() if s.name == name]
        assert len(matches) == 1, f"expected one span {name!r}, got {[s.name for s in self.spans()]}"
        return matches[0]

    def metric_points(self, name: str) -> list[Any]:
        """Data points of the metric `name` (all scopes), collected now."""
        data = self.reader.get_metrics_data()
        points: list[Any] = []
        if data is None:
            return points
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points

    def kwargs(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(tracer_provider, meter_provider, exporter, reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def instrumented_fixture(instrumentor: type[BaseInstrumentor]) -> Callable[..., Iterator[Otel]]:
    """A fixture that instruments with `instrumentor` against the test's SDK (`otel`) and uninstruments afterwards;
    a test module takes it as ``instrumented = instrumented_fixture(SomeInstrumentor)``."""

    @pytest.fixture
    def instrumented(otel: Otel) -> Iterator[Otel]:
        instrumentor().instrument(**otel.kwargs())
        yield otel
        instrumentor().uninstrument()

    return instrumented


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[RotelCollector]:
    """A real collector (rotel) on loopback for the end-to-end tests, stopped afterwards (see `collector_or_skip`)."""
    started = collector_or_skip(tmp_path)
    yield started
    started.stop()
