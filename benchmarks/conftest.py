"""Benchmark fixtures. Every scenario is measured in several variants in the same run, and `report.py` turns them
into ratios (instrumented vs bare, and vs the same telemetry built by hand with the OpenTelemetry API), so the machine's
speed and noise cancel out as far as they can. Nothing here asserts on time.

Conventions: a benchmark sets ``benchmark.group`` to its scenario and ``benchmark.extra_info["variant"]`` to one of
``bare`` (the library alone, no OpenTelemetry), ``no_sdk`` (instrumented, no SDK configured), ``hand_built`` (the library
alone plus the same spans and metric points made by hand), ``instrumented`` (instrumented, with the same SDK set-up).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult


class NullExporter(SpanExporter):
    """Takes every span and drops it: the SDK's processing cost is measured, not an exporter's I/O."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


@dataclass
class Sdk:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def kwargs(self) -> dict[str, object]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}


@pytest.fixture
def sdk() -> Iterator[Sdk]:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(NullExporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    yield Sdk(tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def variant(benchmark: object, group: str, name: str) -> None:
    benchmark.group = group  # type: ignore[attr-defined]
    benchmark.extra_info["variant"] = name  # type: ignore[attr-defined]
