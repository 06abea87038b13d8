"""The SDK providers and exporters `setup()` creates when the app has none.

Only the OpenTelemetry API is imported at module level: the SDK and the exporters come with the ``otlp`` extra and
are imported when setup() has to configure export. OTLP always goes through a batch processor or the periodic metric
reader, off the app's threads: a collector that is down never blocks or breaks the app.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import metrics, trace

from otel_resilience._setup.validation import SIGNALS, Export, Plan

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor

INSTALL_HINT: Final = "pip install 'otel-resilience[otlp]'"


def global_tracer_provider() -> trace.TracerProvider | None:
    """The global tracer provider when the app or the launcher set one, else None (the API's proxy is no provider)."""
    provider = trace.get_tracer_provider()
    return None if isinstance(provider, trace.ProxyTracerProvider) else provider


def global_meter_provider() -> metrics.MeterProvider | None:
    from opentelemetry.metrics._internal import _ProxyMeterProvider

    provider = metrics.get_meter_provider()
    return None if isinstance(provider, _ProxyMeterProvider) else provider


def _import_sdk() -> None:
    """Fail early, with what to install, when the SDK or the OTLP exporters (the ``otlp`` extra) are missing."""
    try:
        import opentelemetry.sdk.metrics  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"otel_resilience.setup() needs the OpenTelemetry SDK to configure export; install it with: {INSTALL_HINT}"
        ) from exc


def _otlp_module(protocol: str, signal: str) -> Any:
    package = "grpc" if protocol == "grpc" else "http"
    module = f"opentelemetry.exporter.otlp.proto.{package}.{'trace' if signal == 'traces' else 'metric'}_exporter"
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"otel_resilience.setup() needs the OTLP exporter for {protocol} ({module}); install it with: "
            f"{INSTALL_HINT}"
        ) from exc


def _otlp_exporter(export: Export, signal: str, endpoint: str | None) -> Any:
    module = _otlp_module(export.protocol, signal)
    cls = module.OTLPSpanExporter if signal == "traces" else module.OTLPMetricExporter
    if endpoint is None:
        return cls()  # the exporter reads OTEL_EXPORTER_OTLP_[SIGNAL_]ENDPOINT and the other variables itself
    if export.protocol == "http/protobuf":
        return cls(endpoint=endpoint.rstrip("/") + SIGNALS[signal].otlp_path)
    return cls(endpoint=endpoint)


def _exporter(plan: Plan, export: Export, signal: str) -> Any:
    """The OTLP exporter of `signal`, or what the entry point `export` names in the signal's group (for metrics, an
    exporter or a reader): each signal then only says how it is fed."""
    if export.kind == "otlp":
        return _otlp_exporter(export, signal, plan.endpoint)
    from importlib.metadata import entry_points

    return next(iter(entry_points(group=SIGNALS[signal].group, name=export.name))).load()()


def _span_processors(plan: Plan) -> list[SpanProcessor]:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from otel_resilience.console import ConsoleTreeSpanExporter

    # The console view is for people at a terminal: print each trace as it finishes, in order with the app's own
    # output.
    return [
        SimpleSpanProcessor(ConsoleTreeSpanExporter())
        if export.kind == "console"
        else BatchSpanProcessor(_exporter(plan, export, "traces"))
        for export in plan.traces
    ]


def _metric_readers(plan: Plan) -> list[MetricReader]:
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

    from otel_resilience.console_summary import ConsoleSummaryMetricReader

    readers: list[MetricReader] = []
    for export in plan.metrics:
        if export.kind == "console":
            readers.append(ConsoleSummaryMetricReader())
            continue
        exporter = _exporter(plan, export, "metrics")
        readers.append(exporter if isinstance(exporter, MetricReader) else PeriodicExportingMetricReader(exporter))
    return readers


def _resource(plan: Plan) -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` (read by `Resource.create`), `service_name` first."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    return Resource.create({SERVICE_NAME: plan.service_name} if plan.service_name else {})


def new_providers(plan: Plan) -> tuple[Any, Any]:
    """SDK providers for the signals that have none yet and an exporter to feed (not made global here). Every
    exporter is built first: one that cannot be imported raises before any provider exists."""
    need_tracer, need_meter = bool(plan.traces), bool(plan.metrics)
    if not need_tracer and not need_meter:
        return None, None
    _import_sdk()
    processors = _span_processors(plan) if need_tracer else []
    readers = _metric_readers(plan) if need_meter else []
    resource = _resource(plan)
    tracer_provider = meter_provider = None
    if need_tracer:
        from opentelemetry.sdk.trace import TracerProvider

        from otel_resilience._setup.ids import PrivateRandomIdGenerator

        # shutdown_on_exit=False: our own at-exit hook shuts down within a bound, the SDK's would wait for exports.
        # Ids from a private source: the SDK's default would consume the app's global `random` sequence.
        tracer_provider = TracerProvider(
            resource=resource, shutdown_on_exit=False, id_generator=PrivateRandomIdGenerator()
        )
        for processor in processors:
            tracer_provider.add_span_processor(processor)
    if need_meter:
        from opentelemetry.sdk.metrics import MeterProvider

        from otel_resilience._setup.ids import exemplar_views

        meter_provider = MeterProvider(
            resource=resource, metric_readers=readers, shutdown_on_exit=False, views=exemplar_views()
        )
    return tracer_provider, meter_provider
