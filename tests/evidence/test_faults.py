"""Faults around the app: a collector that is down, unreachable or hangs, an exporter or a span processor that raises,
and errors inside otel_resilience itself. In every case the app's calls give exactly what they give without
instrumentation, they never wait for export, shutdown returns within its bound, and nothing of ours raises into the
app (our own errors are logged once per place).

No timing assertions: waits are bounded only as hang guards (a worker joined with a generous timeout, a child process
with a timeout), which fail the test when something blocks instead of measuring how fast it went.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import opentelemetry.context
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_resilience import Handle
from otel_resilience.core import _safety
from otel_resilience.core import breaker as breaker_module
from otel_resilience.core.breaker import BreakerCall
from otel_resilience.core.registry import REGISTRY, BreakerEntry
from otel_resilience.core.retry import ProxiedAttempts, RetryOperation
from otel_resilience.core.telemetry import Telemetry
from otel_resilience._setup import load_instrumentor
from tests.conftest import Otel
from tests.support.evidence import WORKLOADS, assert_injected_failure_reported, internal_error_places, run_workloads
from tests.support.processes import checked, clean_env, run_python

OPS = 300
"""Calls per workload in-process (each library's workload retries, exhausts, trips, rejects and recovers)."""
CHILD_OPS = 1000
"""Calls per workload in a child process: several thousand spans, more than the batch processor's queue holds."""
HANG_GUARD = 120.0
"""Seconds after which a worker is considered hung: a failure guard, never a timing measurement."""
INSTRUMENTORS = tuple(load_instrumentor(f"resilience_{library}") for library in WORKLOADS)
"""The instrumentor of every library that has a workload (all those with an instrumentor)."""
ENTRY_POINTS = {f"resilience_{library}" for library in WORKLOADS}


def in_worker(work: Callable[[], Any]) -> Any:
    """Run `work` on a thread and return its result; fail (instead of hanging the suite) if it does not finish."""
    outcome: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            failure.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HANG_GUARD)
    assert not worker.is_alive(), f"{work} did not finish: it blocked"
    if failure:
        raise failure[0]
    return outcome[0]


@contextmanager
def instrument_all(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Iterator[None]:
    for instrumentor in INSTRUMENTORS:
        assert instrumentor is not None
        instrumentor().instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield
    finally:
        for instrumentor in INSTRUMENTORS:
            instrumentor().uninstrument()  # type: ignore[misc]


class CountingProcessor(SpanProcessor):
    """Counts the spans that ended: proof that instrumentation was live while export failed."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


# --- a collector that is down, unreachable or hangs (setup() in a fresh process) ------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def hanging_collector() -> Iterator[int]:
    """A loopback TCP server that accepts every connection, reads what it is sent and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:  # the accept timeout, or the server closed
                continue
            connection.setblocking(False)
            held.append(connection)
            for other in held:
                try:
                    other.recv(65536)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join(HANG_GUARD)
    server.close()
    for connection in held:
        connection.close()


CHILD = """
    import json, sys
    from opentelemetry.sdk.trace import SpanProcessor
    from tests.support.evidence import run_workloads

    endpoint, protocol, ops = sys.argv[1], sys.argv[2], int(sys.argv[3])
    bare = run_workloads(ops)

    import otel_resilience

    handle = otel_resilience.setup(endpoint=endpoint, protocol=protocol, service_name="faults")

    class Counting(SpanProcessor):
        ended = 0

        def on_end(self, span):
            Counting.ended += 1

    handle.tracer_provider.add_span_processor(Counting())
    traced = run_workloads(ops)
    flushed = handle.force_flush(timeout=1.0)
    shut_down = handle.shutdown(timeout=1.0)
    print(json.dumps({
        "same": traced == bare,
        "instrumented": sorted(handle.instrumented),
        "spans": Counting.ended,
        "flushed": flushed,
        "shut_down": shut_down,
    }))
"""


def run_child(endpoint: str, protocol: str) -> dict[str, Any]:
    env = clean_env(OTEL_BSP_SCHEDULE_DELAY="10", OTEL_METRIC_EXPORT_INTERVAL="50")
    result = checked(run_python(CHILD, endpoint, protocol, str(CHILD_OPS), env=env))
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_collector_down(protocol: str) -> None:
    report = run_child(f"http://127.0.0.1:{closed_port()}", protocol)
    assert report["same"] is True
    assert ENTRY_POINTS <= set(report["instrumented"])
    assert report["spans"] > 2048  # live instrumentation, more spans than the batch queue holds
    assert report["flushed"] is False  # nothing could be delivered, and flushing gave up within its bound


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_collector_that_hangs(protocol: str, hanging_collector: int) -> None:
    report = run_child(f"http://127.0.0.1:{hanging_collector}", protocol)
    assert report["same"] is True
    assert ENTRY_POINTS <= set(report["instrumented"])
    assert report["spans"] > 2048
    assert report["flushed"] is False


# --- an exporter or a span processor that raises (in process) ----------------------------------------------------------


class RaisingSpanExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        raise RuntimeError("span exporter broke")

    def shutdown(self) -> None:
        raise RuntimeError("span exporter shutdown broke")


class RaisingMetricExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self.calls = 0

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        self.calls += 1
        raise RuntimeError("metric exporter broke")

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        raise RuntimeError("metric exporter flush broke")

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        raise RuntimeError("metric exporter shutdown broke")


def test_exporters_that_raise() -> None:
    bare = run_workloads(OPS)
    span_exporter, metric_exporter = RaisingSpanExporter(), RaisingMetricExporter()
    counting = CountingProcessor()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(counting)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter, schedule_delay_millis=1))
    meter_provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(metric_exporter, export_interval_millis=5)],
        shutdown_on_exit=False,
    )
    try:
        with instrument_all(tracer_provider, meter_provider):
            traced = in_worker(lambda: run_workloads(OPS))
        assert traced == bare
        assert counting.ended > 0
        handle = Handle(tracer_provider, meter_provider, owns_tracer_provider=True, owns_meter_provider=True)
        # Shutdown returns (bounded), raises nothing, and says it did not go cleanly (the exporters' shutdown raised).
        assert in_worker(lambda: handle.shutdown(timeout=2.0)) is False
        assert span_exporter.calls > 0 and metric_exporter.calls > 0  # the broken exporters were really used
    finally:
        stop_quietly(meter_provider)  # see test_shutdown_closes_every_provider_even_when_one_fails


class ShutdownRecordingMetricExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__(preferred_temporality={}, preferred_aggregation={})
        self.shut_down = False

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.shut_down = True


def test_shutdown_closes_every_provider_even_when_one_fails() -> None:
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(RaisingSpanExporter()))
    metric_exporter = ShutdownRecordingMetricExporter()
    meter_provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(metric_exporter, export_interval_millis=60_000)],
        shutdown_on_exit=False,
    )
    handle = Handle(tracer_provider, meter_provider, owns_tracer_provider=True, owns_meter_provider=True)
    try:
        assert in_worker(lambda: handle.shutdown(timeout=2.0)) is False  # the span exporter's shutdown raised
        assert metric_exporter.shut_down  # and the meter provider was shut down all the same
    finally:
        stop_quietly(meter_provider)


def stop_quietly(meter_provider: MeterProvider) -> None:
    """Stop a meter provider's reader threads whatever state it is in, so that no test leaves one running."""
    try:
        meter_provider.shutdown(timeout_millis=2_000)
    except Exception:  # noqa: BLE001 - already shut down, or its exporter raises: stopped either way
        pass


class RaisingProcessor(SpanProcessor):
    """A span processor that raises wherever the SDK calls it (the SDK does not guard its processors)."""

    def __init__(self, where: str) -> None:
        self.where = where

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.where == "on_start":
            raise RuntimeError("processor on_start broke")

    def on_end(self, span: ReadableSpan) -> None:
        if self.where == "on_end":
            raise RuntimeError("processor on_end broke")


@pytest.mark.parametrize("where", ["on_start", "on_end"])
def test_span_processor_that_raises(where: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_safety, "_reported", set())
    bare = run_workloads(OPS)
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(RaisingProcessor(where))
    meter_provider = MeterProvider()
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        with instrument_all(tracer_provider, meter_provider):
            traced = in_worker(lambda: run_workloads(OPS))
    assert traced == bare
    places = internal_error_places(caplog)
    assert places  # our code met the broken processor, and said so
    assert len(places) == len(set(places))  # once per place, not once per call


# --- errors inside otel_resilience itself -------------------------------------------------------------------------------------

CORE_METHODS: list[tuple[Any, str]] = [
    (Telemetry, "recording"),  # `records()` is its guarded form: a failure here is what it guards against
    (RetryOperation, "start"),
    (BreakerCall, "start"),
    (Telemetry, "record_transition"),
    (RetryOperation, "attempt_started"),
    (RetryOperation, "activate"),
    (RetryOperation, "deactivate"),
    (RetryOperation, "attempt_ended"),
    (RetryOperation, "ended"),
    # BreakerCall.activate and .deactivate run on every call and guard their own bodies inline: the failure is
    # injected into what they call.
    (breaker_module, "set_span_in_context"),
    (opentelemetry.context, "detach"),
    (BreakerCall, "admitted_in"),
    (BreakerCall, "refused_in"),
    (BreakerCall, "add_state_change"),
    (BreakerCall, "observe"),
    (BreakerCall, "ended"),
    (ProxiedAttempts, "attempt_ended"),
    (ProxiedAttempts, "ended"),
    (BreakerEntry, "transition"),
    (type(REGISTRY), "entry"),
]


@pytest.mark.parametrize("owner,method", CORE_METHODS, ids=[f"{owner.__name__}.{method}" for owner, method in CORE_METHODS])
def test_an_error_in_our_core_never_reaches_the_app(
    owner: Any, method: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_safety, "_reported", set())
    bare = run_workloads(OPS)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"injected failure in {owner.__name__}.{method}")

    monkeypatch.setattr(owner, method, broken)
    otel = Otel(TracerProvider(), MeterProvider(), InMemorySpanExporter(), None)  # type: ignore[arg-type]
    otel.tracer_provider.add_span_processor(SimpleSpanProcessor(otel.exporter))
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        with instrument_all(otel.tracer_provider, otel.meter_provider):
            traced = in_worker(lambda: run_workloads(OPS))
    assert traced == bare
    assert_injected_failure_reported(caplog, f"injected failure in {owner.__name__}.{method}")

