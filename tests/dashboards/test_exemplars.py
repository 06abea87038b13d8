"""Exemplars: with the SDK's default exemplar filter (trace-based), a retried operation's histogram points carry an
exemplar in the bucket the operation landed in, naming the retried operation's own span (recorded in its context, not
the caller's), so a dashboard panel leads to the retried trace behind a number, at the operation. An operation whose
span is sampled out gets no exemplar (tests/test_sampling.py); the breaker counters get none either (recorded in a context with no span: the
SDK's counter reservoir would draw from the app's global `random`, tests/test_ids.py)

Exemplars travel over OTLP: a real collector (rotel) receives them with the points. (opentelemetry-exporter-prometheus
does not write exemplars; they reach Prometheus through OTLP, the Collector's prometheus exporter with OpenMetrics,
and Prometheus's exemplar storage: docs/dashboards.md.)"""

from __future__ import annotations

import re

import pybreaker
import tenacity
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider

from otel_resilience import semconv
from otel_resilience.instrumentation.pybreaker import PyBreakerInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from tests.support.collector import RotelCollector
from tests.conftest import Otel, instrumented_fixture
from tests.support.prometheus_server import poll

instrumented = instrumented_fixture(TenacityInstrumentor)


def test_a_bucket_links_to_the_trace_of_an_operation_that_landed_there(instrumented: Otel) -> None:
    failures = [ConnectionError("down"), ConnectionError("down")]

    @tenacity.retry(stop=tenacity.stop_after_attempt(5), wait=tenacity.wait_none())
    def fetch() -> str:
        if failures:
            raise failures.pop()
        return "ok"

    tracer = instrumented.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("GET /orders") as request:
        assert fetch() == "ok"
    operation = next(s for s in instrumented.spans() if s.name.startswith(f"{semconv.RETRY_OPERATION_SPAN_PREFIX} "))
    assert operation.context.trace_id == request.get_span_context().trace_id

    # one collection: the SDK hands each exemplar to one collection only
    data = instrumented.reader.get_metrics_data()
    assert data is not None
    points = {
        metric.name: metric.data.data_points
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    (attempts,) = points[semconv.METRIC_RETRY_ATTEMPTS]
    (duration,) = points[semconv.METRIC_RETRY_DURATION]
    for point, value in ((attempts, 3), (duration, None)):
        assert isinstance(point, HistogramDataPoint)
        (exemplar,) = point.exemplars
        assert exemplar.trace_id == operation.context.trace_id
        assert exemplar.span_id == operation.context.span_id != request.get_span_context().span_id
        if value is not None:
            assert exemplar.value == value
            # the exemplar sits in the bucket the operation was counted in (le=3 of 1,2,3,...)
            bucket = list(point.explicit_bounds).index(3.0)
            assert point.bucket_counts[bucket] == 1


def test_an_operation_with_no_span_around_it_links_to_its_own_trace(instrumented: Otel) -> None:
    @tenacity.retry(stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_none())
    def fetch() -> str:
        return "ok"

    fetch()
    operation = next(s for s in instrumented.spans() if s.name.startswith(f"{semconv.RETRY_OPERATION_SPAN_PREFIX} "))
    assert operation.parent is None
    (attempts,) = instrumented.metric_points(semconv.METRIC_RETRY_ATTEMPTS)
    (exemplar,) = attempts.exemplars
    assert (exemplar.trace_id, exemplar.span_id) == (operation.context.trace_id, operation.context.span_id)


def test_breaker_counters_carry_no_exemplar_inside_a_sampled_span(otel: Otel) -> None:
    """The breaker counters are recorded in a context with no span: the SDK's counter reservoir would otherwise draw
    from the app's global `random` (tests/test_ids.py); the call's span is there all the same."""
    PyBreakerInstrumentor().instrument(**otel.kwargs())
    try:
        breaker = pybreaker.CircuitBreaker(fail_max=1, name="payments")
        with otel.tracer_provider.get_tracer("app").start_as_current_span("POST /payments"):
            assert breaker.call(lambda: "ok") == "ok"
            try:
                breaker.call(_fail)  # trips the breaker: pybreaker raises CircuitBreakerError
            except pybreaker.CircuitBreakerError:
                pass
    finally:
        PyBreakerInstrumentor().uninstrument()
    assert [s.name for s in otel.spans()] == ["circuitbreaker payments", "circuitbreaker payments", "POST /payments"]
    calls = otel.metric_points(semconv.METRIC_BREAKER_CALLS)
    transitions = otel.metric_points(semconv.METRIC_BREAKER_TRANSITIONS)
    assert sum(p.value for p in calls) == 2 and sum(p.value for p in transitions) == 1
    assert all(not p.exemplars for p in calls + transitions)


def _fail() -> None:
    raise ConnectionError("down")


def _exemplar_of(output: str, metric: str) -> tuple[str, str] | None:
    """(trace id, value) of the first exemplar of `metric` in what the collector printed."""
    block = output.partition(f"-> Name: {metric}\n")[2].partition("\nMetric #")[0]
    found = re.search(r"Exemplar #0\n\s+-> Trace ID: (\w+)\n\s+-> Span ID: \w+\n.*?-> Value: (\S+)", block, re.S)
    return (found.group(1), found.group(2)) if found else None


def test_exemplars_reach_a_collector_over_otlp(collector: RotelCollector) -> None:
    exporter = OTLPMetricExporter(endpoint=collector.grpc_endpoint, insecure=True)
    meter_provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(exporter, 3_600_000)])
    tracer_provider = TracerProvider()
    instrumentor = TenacityInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        failures = [ConnectionError("down")]

        @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none())
        def fetch() -> str:
            if failures:
                raise failures.pop()
            return "ok"

        with tracer_provider.get_tracer("app").start_as_current_span("GET /orders") as request:
            fetch()
        assert meter_provider.force_flush(10_000)
        trace_id = format(request.get_span_context().trace_id, "032x")
        found = poll(
            "an exemplar of retry.attempts at the collector", lambda: _exemplar_of(collector.output(), "retry.attempts")
        )
        assert found == (trace_id, "2")
        assert _exemplar_of(collector.output(), "retry.duration") is not None
    finally:
        instrumentor.uninstrument()
        meter_provider.shutdown()
        tracer_provider.shutdown()
