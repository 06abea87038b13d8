"""`setup()`: the explicit way in. One call configures export when the app has none, instruments every installed
supported library, and returns a `Handle` the app can flush and shut down.

Rules (DESIGN.md, "Set-up and the launcher"):

- Providers: `tracer_provider`/`meter_provider` when given; else the global ones when the app or the launcher already
  configured them (replaced never); else setup() configures an SDK provider per signal and makes it global.
- Exporter: the arguments, then the standard ``OTEL_*`` variables, then OpenTelemetry's own default (``otlp``, over
  gRPC as opentelemetry-python's ``otlp`` entry point is). OTLP export always goes through a batch processor or the
  periodic metric reader, off the app's threads: a collector that is down never blocks or breaks the app.
- Shutdown is bounded (a few seconds), also at interpreter exit.
- Everything the caller got wrong raises one `ValueError` naming what was wrong and what is accepted, before
  anything is configured or patched.

Only the OpenTelemetry API is imported at module level: the SDK and the exporters come with the ``otlp`` extra and
are imported when setup() has to configure export.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_resilience.core.config import (
    ATTEMPT_SPANS_CHOICES,
    ATTEMPT_SPANS_ENV,
    SETTINGS,
    STACKTRACES_CHOICES,
    STACKTRACES_ENV,
    checked_choice,
)
from otel_resilience.instrumentation import INSTRUMENTORS

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor

_logger = logging.getLogger("otel_resilience")

INSTALL_HINT: Final = "pip install 'otel-resilience[otlp]'"
EXPORTERS: Final = ("otlp", "console", "none")
PROTOCOLS: Final = ("grpc", "http/protobuf")
DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0
"""Seconds `Handle.shutdown()` and `Handle.force_flush()` wait at most (also at interpreter exit)."""

# Standard OpenTelemetry variables (the SDK reads the others itself: headers, timeouts, certificates, BSP, sampler).
OTEL_TRACES_EXPORTER: Final = "OTEL_TRACES_EXPORTER"
OTEL_METRICS_EXPORTER: Final = "OTEL_METRICS_EXPORTER"
OTEL_EXPORTER_OTLP_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_EXPORTER_OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_PYTHON_DISABLED_INSTRUMENTATIONS: Final = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"

_SIGNALS: Final = {
    # signal: (exporter variable, entry-point group, OTLP path)
    "traces": (OTEL_TRACES_EXPORTER, "opentelemetry_traces_exporter", "/v1/traces"),
    "metrics": (OTEL_METRICS_EXPORTER, "opentelemetry_metrics_exporter", "/v1/metrics"),
}
_OTLP_BY_NAME: Final = {"otlp_proto_grpc": "grpc", "otlp_proto_http": "http/protobuf"}
_CONSOLE_ENTRY_POINT: Final = "resilience_console"
_ENTRY_POINT_PREFIX: Final = "resilience_"
LIBRARIES: Final = tuple(name.removeprefix(_ENTRY_POINT_PREFIX) for name in INSTRUMENTORS)
"""The library names `setup(libraries=...)` accepts (their entry-point names ``resilience_{name}`` too)."""


# --- the plan: every input checked before anything happens ----------------------------------------------------------


@dataclass(frozen=True)
class _Export:
    """How one signal is exported: OTLP over `protocol`, our console tree, or an exporter entry point by name."""

    kind: str  # "otlp", "console" or "entry_point"
    protocol: str = "grpc"
    name: str = ""


@dataclass(frozen=True)
class _Plan:
    traces: tuple[_Export, ...]
    metrics: tuple[_Export, ...]
    endpoint: str | None
    service_name: str | None
    libraries: tuple[str, ...]
    attempt_spans: str | None
    stacktraces: str | None
    retry_targets: tuple[str, ...]
    breaker_targets: tuple[str, ...]


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def _accepted(values: Iterable[str]) -> str:
    return ", ".join(repr(v) for v in values)


def _checked_endpoint(what: str, value: object) -> str:
    """An OTLP endpoint must be a URL with scheme http or https and a host (optionally a port and a path)."""
    problem = (
        f"{what}: {value!r} is not an OTLP endpoint; use a URL like 'http://localhost:4317' (gRPC) or "
        f"'http://localhost:4318' (HTTP): scheme http or https, a host, an optional port"
    )
    if not isinstance(value, str):
        raise ValueError(problem)
    parts = urlsplit(value.strip())
    try:
        port = parts.port
    except ValueError:
        raise ValueError(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or (port is not None and not 0 < port < 65536):
        raise ValueError(problem)
    return value.strip()


def _checked_protocol(what: str, value: object) -> str:
    if not isinstance(value, str) or value.strip().lower() not in PROTOCOLS:
        raise ValueError(f"{what}: {value!r} is not an OTLP protocol; use one of: {_accepted(PROTOCOLS)}")
    return value.strip().lower()


def _protocol_for(signal: str, protocol: str | None) -> str:
    """The argument, then ``OTEL_EXPORTER_OTLP_{SIGNAL}_PROTOCOL``, then ``OTEL_EXPORTER_OTLP_PROTOCOL``, then gRPC."""
    if protocol is not None:
        return protocol
    for variable in (f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL", OTEL_EXPORTER_OTLP_PROTOCOL):
        value = _env(variable)
        if value is not None:
            return _checked_protocol(variable, value)
    return "grpc"


def _entry_point_names(group: str) -> list[str]:
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group=group)})


def _exports_for(signal: str, exporter: str | None, protocol: str | None) -> tuple[_Export, ...]:
    variable, group, _ = _SIGNALS[signal]
    if exporter is not None:
        if exporter == "otlp":
            return (_Export("otlp", _protocol_for(signal, protocol)),)
        if exporter == "console" and signal == "traces":
            return (_Export("console"),)
        return ()  # "none", or "console" for metrics: the console view shows traces only
    names = [n.strip() for n in (_env(variable) or "otlp").split(",") if n.strip()]
    if any(n.lower() == "none" for n in names):
        return ()
    exports: list[_Export] = []
    for name in names:
        if name == "otlp":
            exports.append(_Export("otlp", _protocol_for(signal, protocol)))
        elif name in _OTLP_BY_NAME:
            exports.append(_Export("otlp", _OTLP_BY_NAME[name]))
        elif name == _CONSOLE_ENTRY_POINT:
            exports.append(_Export("console"))
        elif name in _entry_point_names(group):
            exports.append(_Export("entry_point", name=name))
        else:
            accepted = ["otlp", "none", *_entry_point_names(group)]
            raise ValueError(f"{variable}: {name!r} is not an installed exporter; use one of: {_accepted(accepted)}")
    return tuple(exports)


def _disabled_names() -> set[str]:
    """The entry-point names ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` lists (``*`` stands for all)."""
    return {n.strip() for n in (_env(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS) or "").split(",") if n.strip()}


def _checked_libraries(libraries: Iterable[str] | None) -> tuple[str, ...]:
    """Entry-point names to instrument: all of ours, or those named (bare or as entry-point names), minus those
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` switches off (``*`` switches off all, as for the launcher)."""
    if libraries is None:
        chosen = list(INSTRUMENTORS)
    else:
        if isinstance(libraries, str):
            raise ValueError(f"libraries: give a list of names, not the string {libraries!r}; accepted names: "
                             f"{_accepted(LIBRARIES)}")
        chosen = []
        for name in libraries:
            key = name if isinstance(name, str) and name in INSTRUMENTORS else f"{_ENTRY_POINT_PREFIX}{name}"
            if not isinstance(name, str) or key not in INSTRUMENTORS:
                raise ValueError(f"libraries: {name!r} is not a supported library; accepted names: "
                                 f"{_accepted(LIBRARIES)}")
            if key not in chosen:
                chosen.append(key)
    disabled = _disabled_names()
    if "*" in disabled:
        return ()
    return tuple(name for name in chosen if name not in disabled)


def _checked_setting(what: str, variable: str, value: object, accepted: tuple[str, ...]) -> str | None:
    if value is None:
        env_value = _env(variable)
        return None if env_value is None else checked_choice(variable, env_value, accepted)
    if not isinstance(value, str):
        raise ValueError(f"{what}: {value!r} is not accepted; use one of: {', '.join(accepted)}")
    return checked_choice(what, value, accepted)


def _checked_targets(what: str, value: object, *, environment: str) -> tuple[str, ...]:
    """Targets as a tuple of strings (their syntax is the targets module's to check): a list, or one comma-separated
    string. None means the `environment` variable, unless ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` lists the
    targets' entry point (as it does for the launcher)."""
    from otel_resilience import targets

    if value is None:
        disabled = _disabled_names()
        if "*" in disabled or targets.ENTRY_POINT_NAME in disabled:
            return ()
        value = _env(getattr(targets, environment)) or ""
    if isinstance(value, str):
        return tuple(targets.spec.split_targets(value))
    if isinstance(value, Iterable) and all(isinstance(t, str) for t in value):
        return tuple(t.strip() for t in value if t.strip())
    raise ValueError(f"{what}: {value!r} is not accepted; give a list of 'module:Qual.name[:argname]' strings "
                     f"or one comma-separated string")


def _plan(
    *,
    configure: tuple[bool, bool],
    exporter: object,
    protocol: object,
    endpoint: object,
    service_name: object,
    libraries: Iterable[str] | None,
    retry_targets: object,
    breaker_targets: object,
    attempt_spans: object,
    stacktraces: object,
) -> _Plan:
    if exporter is not None and (not isinstance(exporter, str) or exporter.strip().lower() not in EXPORTERS):
        raise ValueError(f"exporter: {exporter!r} is not accepted; use one of: {_accepted(EXPORTERS)}")
    chosen_exporter = exporter.strip().lower() if isinstance(exporter, str) else None
    chosen_protocol = None if protocol is None else _checked_protocol("protocol", protocol)
    if endpoint is not None:
        endpoint = _checked_endpoint("endpoint", endpoint)
    if service_name is not None and (not isinstance(service_name, str) or not service_name.strip()):
        raise ValueError(f"service_name: {service_name!r} is not accepted; give a non-empty string")
    # The exporter variables matter, and are checked, only for a signal whose provider setup() creates.
    traces = _exports_for("traces", chosen_exporter, chosen_protocol) if configure[0] else ()
    metrics_exports = _exports_for("metrics", chosen_exporter, chosen_protocol) if configure[1] else ()
    if endpoint is None and any(e.kind == "otlp" for e in traces + metrics_exports):
        for variable in (
            OTEL_EXPORTER_OTLP_ENDPOINT,
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ):
            value = _env(variable)
            if value is not None:
                _checked_endpoint(variable, value)
    return _Plan(
        traces=traces,
        metrics=metrics_exports,
        endpoint=endpoint,  # type: ignore[arg-type]
        service_name=service_name.strip() if isinstance(service_name, str) else None,
        libraries=_checked_libraries(libraries),
        attempt_spans=_checked_setting("attempt_spans", ATTEMPT_SPANS_ENV, attempt_spans, ATTEMPT_SPANS_CHOICES),
        stacktraces=_checked_setting("stacktraces", STACKTRACES_ENV, stacktraces, STACKTRACES_CHOICES),
        retry_targets=_checked_targets("retry_targets", retry_targets, environment="RETRY_TARGETS_ENV"),
        breaker_targets=_checked_targets("breaker_targets", breaker_targets, environment="BREAKER_TARGETS_ENV"),
    )


# --- providers ---------------------------------------------------------------------------------------------------------


def _global_tracer_provider() -> trace.TracerProvider | None:
    """The global tracer provider when the app or the launcher set one, else None (the API's proxy is no provider)."""
    provider = trace.get_tracer_provider()
    return None if isinstance(provider, trace.ProxyTracerProvider) else provider


def _global_meter_provider() -> metrics.MeterProvider | None:
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


def _otlp_exporter(export: _Export, signal: str, endpoint: str | None) -> Any:
    module = _otlp_module(export.protocol, signal)
    cls = module.OTLPSpanExporter if signal == "traces" else module.OTLPMetricExporter
    if endpoint is None:
        return cls()  # the exporter reads OTEL_EXPORTER_OTLP_[SIGNAL_]ENDPOINT and the other variables itself
    if export.protocol == "http/protobuf":
        return cls(endpoint=endpoint.rstrip("/") + _SIGNALS[signal][2])
    return cls(endpoint=endpoint)


def _entry_point_class(group: str, name: str) -> Any:
    from importlib.metadata import entry_points

    return next(iter(entry_points(group=group, name=name))).load()


def _span_processors(plan: _Plan) -> list[SpanProcessor]:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from otel_resilience.console import ConsoleTreeSpanExporter

    processors: list[SpanProcessor] = []
    for export in plan.traces:
        if export.kind == "otlp":
            processors.append(BatchSpanProcessor(_otlp_exporter(export, "traces", plan.endpoint)))
        elif export.kind == "console":
            # The console view is for people at a terminal: print each trace as it finishes, in order with the app's
            # own output.
            processors.append(SimpleSpanProcessor(ConsoleTreeSpanExporter()))
        else:
            processors.append(BatchSpanProcessor(_entry_point_class(_SIGNALS["traces"][1], export.name)()))
    return processors


def _metric_readers(plan: _Plan) -> list[MetricReader]:
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

    readers: list[MetricReader] = []
    for export in plan.metrics:
        if export.kind == "otlp":
            readers.append(PeriodicExportingMetricReader(_otlp_exporter(export, "metrics", plan.endpoint)))
        else:
            cls = _entry_point_class(_SIGNALS["metrics"][1], export.name)
            readers.append(cls() if issubclass(cls, MetricReader) else PeriodicExportingMetricReader(cls()))
    return readers


def _resource(plan: _Plan) -> Resource:
    """``OTEL_RESOURCE_ATTRIBUTES`` and ``OTEL_SERVICE_NAME`` (read by `Resource.create`), `service_name` first."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    return Resource.create({SERVICE_NAME: plan.service_name} if plan.service_name else {})


# --- bounded waits -----------------------------------------------------------------------------------------------------


def _each(items: list[Any], action: Callable[[Any], object]) -> None:
    """Apply `action` to every item even when one raises (one provider failing to shut down must not leave the
    other exporting for the rest of the process); then raise the first error, for `_bounded` to log."""
    first: Exception | None = None
    for item in items:
        try:
            action(item)
        except Exception as exc:
            first = first or exc
    if first is not None:
        raise first


def _bounded(work: Callable[[], object], timeout: float) -> bool:
    """Run `work` on a daemon thread and wait at most `timeout` seconds: True when it finished in time without
    raising. A collector that hangs keeps that thread, never the caller. Where no thread can be started (interpreter
    shutdown on Python ≥ 3.12) it runs here; the exporters' own timeouts bound it then."""
    outcome: list[bool] = []

    def run() -> None:
        try:
            work()
            outcome.append(True)
        except Exception:
            _logger.warning("otel_resilience: flushing telemetry failed", exc_info=True)
            outcome.append(False)

    try:
        worker = threading.Thread(target=run, name="otel_resilience-shutdown", daemon=True)
        worker.start()
    except RuntimeError:
        run()
        return outcome == [True]
    worker.join(timeout)
    if worker.is_alive():
        _logger.warning("otel_resilience: telemetry export did not finish within %.1f s; going on without it", timeout)
        return False
    return outcome == [True]


# --- the handle ----------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Handle:
    """What `setup()` returns: the providers in use and what it instrumented.

    `force_flush()` exports what is buffered; `shutdown()` flushes and shuts down the providers setup() created (a
    provider the app or the launcher created is flushed, and left to its owner); both wait at most `timeout` seconds.
    `uninstrument()` removes every patch setup() applied; a later `setup()` call starts afresh."""

    tracer_provider: trace.TracerProvider | None
    meter_provider: metrics.MeterProvider | None
    owns_tracer_provider: bool = False
    owns_meter_provider: bool = False
    instrumented: tuple[str, ...] = ()
    """Entry-point names of the instrumentors this call switched on (not those the launcher had already)."""
    _instrumentors: list[BaseInstrumentor] = field(default_factory=list, repr=False)
    _targets: bool = field(default=False, repr=False)
    _shut_down: bool = field(default=False, repr=False)

    def force_flush(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Export what is buffered; True when every provider flushed within `timeout` seconds."""
        millis = int(timeout * 1000)
        providers = [p for p in (self.tracer_provider, self.meter_provider) if hasattr(p, "force_flush")]
        if not providers:
            return True
        results: list[bool] = []
        done = _bounded(lambda: _each(providers, lambda p: results.append(bool(p.force_flush(millis)))), timeout)
        return done and all(results)

    def shutdown(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Flush and shut down (the providers setup() created; flush only the others) within `timeout` seconds.
        Export ends for the rest of the process: OpenTelemetry sets global providers once. Safe to call twice."""
        if self._shut_down:
            return True
        self._shut_down = True
        atexit.unregister(self._at_exit)
        millis = int(timeout * 1000)
        pairs = [
            (provider, owned)
            for provider, owned in (
                (self.tracer_provider, self.owns_tracer_provider),
                (self.meter_provider, self.owns_meter_provider),
            )
            if provider is not None
        ]
        if not pairs:
            return True
        return _bounded(lambda: _each(pairs, lambda pair: _close(pair[0], pair[1], millis)), timeout)

    def uninstrument(self) -> None:
        """Remove what setup() patched (library instrumentors and drop-in targets), restoring every original."""
        global _HANDLE
        for instrumentor in reversed(self._instrumentors):
            instrumentor.uninstrument()
        self._instrumentors.clear()
        if self._targets:
            from otel_resilience.targets import uninstrument_targets

            uninstrument_targets()
        self._targets = False
        self.instrumented = ()
        with _LOCK:
            if _HANDLE is self:
                _HANDLE = None

    def _at_exit(self) -> None:
        self.shutdown()


def _close(provider: object, owned: bool, millis: int) -> None:
    """Shut down a provider setup() created; only flush one that belongs to the app or the launcher."""
    if not owned:
        flush = getattr(provider, "force_flush", None)
        if callable(flush):
            flush(millis)
    elif isinstance(provider, metrics.MeterProvider):
        provider.shutdown(timeout_millis=millis)  # type: ignore[call-arg]
    else:
        provider.shutdown()  # type: ignore[attr-defined]


_LOCK: Final = threading.RLock()
_HANDLE: Handle | None = None


# --- instrumenting -----------------------------------------------------------------------------------------------------


def load_instrumentor(entry_point_name: str) -> type[BaseInstrumentor] | None:
    """The instrumentor class named by `entry_point_name`, or None when its library (or its module, in an
    installation that lacks it) cannot be imported. Never raises: a broken instrumentor is logged and skipped."""
    module_name, _, attribute = INSTRUMENTORS[entry_point_name].partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)  # type: ignore[no-any-return]
    except ModuleNotFoundError as exc:
        _logger.debug("otel_resilience: skipping %s: %s", entry_point_name, exc)
    except Exception:
        _logger.warning("otel_resilience: cannot load %s; skipping it", entry_point_name, exc_info=True)
    return None


def _instrument(names: Sequence[str], kwargs: dict[str, Any]) -> list[tuple[str, BaseInstrumentor]]:
    """Switch on each named instrumentor whose library is installed in a supported version; returns those this call
    switched on. One that the launcher already switched on stays as it is."""
    done: list[tuple[str, BaseInstrumentor]] = []
    for name in names:
        cls = load_instrumentor(name)
        if cls is None:
            continue
        instrumentor = cls()
        if instrumentor.is_instrumented_by_opentelemetry:
            continue  # the launcher (or the app) switched it on already: it stays theirs
        conflict = get_dependency_conflicts(instrumentor.instrumentation_dependencies())
        if conflict is not None:
            log = _logger.warning if conflict.found else _logger.debug
            log("otel_resilience: not instrumenting %s: %s", name, conflict)
            continue
        try:
            instrumentor.instrument(skip_dep_check=True, **kwargs)
        except Exception:
            _logger.warning("otel_resilience: instrumenting %s failed; skipping it", name, exc_info=True)
            continue
        done.append((name, instrumentor))
    return done


def _instrument_targets(plan: _Plan, kwargs: dict[str, Any]) -> bool:
    """Patch the app's own helpers named in `retry_targets`/`breaker_targets` (or the environment): True when there
    were any. Raises `ValueError`, patching nothing, for a target that is malformed or cannot be found."""
    if not plan.retry_targets and not plan.breaker_targets:
        return False
    from otel_resilience.targets import instrument_targets

    instrument_targets(plan.retry_targets, plan.breaker_targets, **kwargs)
    return True


def settings_from_environment() -> None:
    """The launcher's ``opentelemetry_pre_instrument`` hook: ``OTEL_PYTHON_RESILIENCE_ATTEMPT_SPANS`` and
    ``OTEL_PYTHON_RESILIENCE_STACKTRACES`` into `SETTINGS`. It runs under the launcher, so it never raises: a wrong
    value is logged as one clear error and the default is kept (`setup()` raises `ValueError` for the same value)."""
    for name, variable, accepted in (
        ("attempt_spans", ATTEMPT_SPANS_ENV, ATTEMPT_SPANS_CHOICES),
        ("stacktraces", STACKTRACES_ENV, STACKTRACES_CHOICES),
    ):
        try:
            value = _checked_setting(name, variable, None, accepted)
        except ValueError as exc:
            _logger.error("otel_resilience: %s; keeping %s=%s", exc, name, getattr(SETTINGS, name))
            continue
        if value is not None:
            setattr(SETTINGS, name, value)


def _new_providers(plan: _Plan) -> tuple[Any, Any]:
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

        # shutdown_on_exit=False: our own at-exit hook shuts down within a bound, the SDK's would wait for exports.
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        for processor in processors:
            tracer_provider.add_span_processor(processor)
    if need_meter:
        from opentelemetry.sdk.metrics import MeterProvider

        meter_provider = MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False)
    return tracer_provider, meter_provider


def _apply_settings(plan: _Plan) -> None:
    if plan.attempt_spans is not None:
        SETTINGS.attempt_spans = plan.attempt_spans  # type: ignore[assignment]
    if plan.stacktraces is not None:
        SETTINGS.stacktraces = plan.stacktraces  # type: ignore[assignment]


def setup(
    *,
    exporter: str | None = None,
    protocol: str | None = None,
    endpoint: str | None = None,
    service_name: str | None = None,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    libraries: Iterable[str] | None = None,
    retry_targets: str | Iterable[str] | None = None,
    breaker_targets: str | Iterable[str] | None = None,
    attempt_spans: str | None = None,
    stacktraces: str | None = None,
) -> Handle:
    """Make retries and circuit breakers visible: configure export if the app has none, instrument every installed
    supported library (or those in `libraries`) and the app's own helpers in `retry_targets`/`breaker_targets`.

    - `exporter`: ``"otlp"``, ``"console"`` (the tree view, traces only) or ``"none"``; default ``OTEL_TRACES_EXPORTER``
      / ``OTEL_METRICS_EXPORTER``, else ``otlp``. Used only for a signal whose provider setup() creates.
    - `protocol`: ``"grpc"`` or ``"http/protobuf"``; default ``OTEL_EXPORTER_OTLP_[SIGNAL_]PROTOCOL``, else gRPC.
    - `endpoint`: the collector's base URL (``http://host:4317`` for gRPC, ``http://host:4318`` for HTTP, where
      ``/v1/traces`` and ``/v1/metrics`` are appended); default the ``OTEL_EXPORTER_OTLP_*ENDPOINT`` variables.
    - `service_name`: ``service.name``; default ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``.
    - `tracer_provider`, `meter_provider`: use these (as contrib instrumentors accept); otherwise the global ones when
      configured, otherwise new SDK providers that become global.
    - `attempt_spans` (``all``, ``on_retry``, ``none``) and `stacktraces` (``final``, ``all``, ``none``): default their
      ``OTEL_PYTHON_RESILIENCE_*`` variables.

    Idempotent: a second call checks its arguments, then returns the same `Handle` and changes nothing. Raises `ValueError` for wrong input and
    `ImportError` (saying ``pip install 'otel-resilience[otlp]'``) when export must be configured without the SDK.
    """
    global _HANDLE
    with _LOCK:
        tracer_provider = tracer_provider or _global_tracer_provider()
        meter_provider = meter_provider or _global_meter_provider()
        plan = _plan(
            configure=(tracer_provider is None, meter_provider is None),
            exporter=exporter,
            protocol=protocol,
            endpoint=endpoint,
            service_name=service_name,
            libraries=libraries,
            retry_targets=retry_targets,
            breaker_targets=breaker_targets,
            attempt_spans=attempt_spans,
            stacktraces=stacktraces,
        )
        if _HANDLE is not None:
            _logger.debug("otel_resilience: setup() was called already; returning the same handle")
            return _HANDLE
        new_tracer_provider, new_meter_provider = _new_providers(plan)
        kwargs: dict[str, Any] = {
            "tracer_provider": tracer_provider or new_tracer_provider,
            "meter_provider": meter_provider or new_meter_provider,
        }
        try:
            targets = _instrument_targets(plan, kwargs)  # the last check that can raise ValueError: the app's modules
        except BaseException:
            _bounded(lambda: [_close(p, True, 1000) for p in (new_tracer_provider, new_meter_provider) if p], 1.0)
            raise
        if new_tracer_provider is not None:
            trace.set_tracer_provider(new_tracer_provider)
        if new_meter_provider is not None:
            metrics.set_meter_provider(new_meter_provider)
        _apply_settings(plan)
        instrumentors = _instrument(plan.libraries, kwargs)
        handle = Handle(
            tracer_provider=kwargs["tracer_provider"],
            meter_provider=kwargs["meter_provider"],
            owns_tracer_provider=new_tracer_provider is not None,
            owns_meter_provider=new_meter_provider is not None,
            instrumented=tuple(name for name, _ in instrumentors),
            _instrumentors=[instrumentor for _, instrumentor in instrumentors],
            _targets=targets,
        )
        if new_tracer_provider is not None or new_meter_provider is not None:
            atexit.register(handle._at_exit)
        _HANDLE = handle
        return handle


__all__ = ["EXPORTERS", "INSTALL_HINT", "LIBRARIES", "PROTOCOLS", "Handle", "load_instrumentor", "setup"]
