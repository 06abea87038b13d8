"""Every input of `setup()` checked before anything is configured or patched: one `ValueError` that names what was
wrong and what is accepted. The result is a `Plan`, which the other modules of this package only read."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from otel_resilience._environment import disabled_instrumentations, env, is_disabled
from otel_resilience.core.config import (
    ATTEMPT_SPANS_CHOICES,
    ATTEMPT_SPANS_ENV,
    STACKTRACES_CHOICES,
    STACKTRACES_ENV,
    checked_choice,
)
from otel_resilience.instrumentation import INSTRUMENTORS

EXPORTERS: Final = ("otlp", "console", "none")
PROTOCOLS: Final = ("grpc", "http/protobuf")

# Standard OpenTelemetry variables (the SDK reads the others itself: headers, timeouts, certificates, BSP, sampler).
OTEL_TRACES_EXPORTER: Final = "OTEL_TRACES_EXPORTER"
OTEL_METRICS_EXPORTER: Final = "OTEL_METRICS_EXPORTER"
OTEL_EXPORTER_OTLP_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_EXPORTER_OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"


@dataclass(frozen=True)
class Signal:
    variable: str
    """The standard variable that names its exporters."""
    group: str
    """The entry-point group of its exporters."""
    otlp_path: str
    """Appended to an OTLP/HTTP base endpoint."""


SIGNALS: Final = {
    "traces": Signal(OTEL_TRACES_EXPORTER, "opentelemetry_traces_exporter", "/v1/traces"),
    "metrics": Signal(OTEL_METRICS_EXPORTER, "opentelemetry_metrics_exporter", "/v1/metrics"),
}
_OTLP_BY_NAME: Final = {"otlp_proto_grpc": "grpc", "otlp_proto_http": "http/protobuf"}
CONSOLE_ENTRY_POINT: Final = "resilience_console"
"""Our console view's exporter name in both groups: the trace trees, and the metrics summary at exit."""
_ENTRY_POINT_PREFIX: Final = "resilience_"
LIBRARIES: Final = tuple(name.removeprefix(_ENTRY_POINT_PREFIX) for name in INSTRUMENTORS)
"""The library names `setup(libraries=...)` accepts (their entry-point names ``resilience_{name}`` too)."""


@dataclass(frozen=True)
class Export:
    """How one signal is exported: OTLP over `protocol`, our console view, or an exporter entry point by name."""

    kind: str  # "otlp", "console" or "entry_point"
    protocol: str = "grpc"
    name: str = ""


@dataclass(frozen=True)
class Plan:
    traces: tuple[Export, ...]
    metrics: tuple[Export, ...]
    endpoint: str | None
    service_name: str | None
    libraries: tuple[str, ...]
    attempt_spans: str | None
    stacktraces: str | None
    retry_targets: tuple[str, ...]
    breaker_targets: tuple[str, ...]


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
        value = env(variable)
        if value is not None:
            return _checked_protocol(variable, value)
    return "grpc"


def _entry_point_names(group: str) -> list[str]:
    from importlib.metadata import entry_points

    return sorted({ep.name for ep in entry_points(group=group)})


def _exports_for(signal: str, exporter: str | None, protocol: str | None) -> tuple[Export, ...]:
    variable, group = SIGNALS[signal].variable, SIGNALS[signal].group
    if exporter is not None:
        if exporter == "otlp":
            return (Export("otlp", _protocol_for(signal, protocol)),)
        if exporter == "console":
            return (Export("console"),)  # the trace trees, and the metrics summary printed at exit
        return ()
    names = [n.strip() for n in (env(variable) or "otlp").split(",") if n.strip()]
    if any(n.lower() == "none" for n in names):
        return ()
    exports: list[Export] = []
    for name in names:
        if name == "otlp":
            exports.append(Export("otlp", _protocol_for(signal, protocol)))
        elif name in _OTLP_BY_NAME:
            exports.append(Export("otlp", _OTLP_BY_NAME[name]))
        elif name == CONSOLE_ENTRY_POINT:
            exports.append(Export("console"))
        elif name in _entry_point_names(group):
            exports.append(Export("entry_point", name=name))
        else:
            accepted = ["otlp", "none", *_entry_point_names(group)]
            raise ValueError(f"{variable}: {name!r} is not an installed exporter; use one of: {_accepted(accepted)}")
    return tuple(exports)


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
    disabled = disabled_instrumentations()
    return tuple(name for name in chosen if not is_disabled(name, disabled))


def checked_setting(what: str, variable: str, value: object, accepted: tuple[str, ...]) -> str | None:
    """`value` checked against `accepted`; None falls back to `variable`, and None again when that is unset."""
    if value is None:
        env_value = env(variable)
        return None if env_value is None else checked_choice(variable, env_value, accepted)
    if not isinstance(value, str):
        raise ValueError(f"{what}: {value!r} is not accepted; use one of: {', '.join(accepted)}")
    return checked_choice(what, value, accepted)


def _checked_targets(what: str, value: object, *, variable: str) -> tuple[str, ...]:
    """Targets as a tuple of strings (their syntax is the targets module's to check): a list, or one comma-separated
    string. None means the `variable`, unless ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` lists the targets' entry point
    (as it does for the launcher)."""
    from otel_resilience.targets import ENTRY_POINT_NAME
    from otel_resilience.targets.spec import split_targets

    if value is None:
        if is_disabled(ENTRY_POINT_NAME):
            return ()
        value = env(variable) or ""
    if isinstance(value, str):
        return tuple(split_targets(value))
    if isinstance(value, Iterable) and all(isinstance(t, str) for t in value):
        return tuple(t.strip() for t in value if t.strip())
    raise ValueError(f"{what}: {value!r} is not accepted; give a list of 'module:Qual.name[:argname]' strings "
                     f"or one comma-separated string")


def make_plan(
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
) -> Plan:
    """Check everything; `configure` says for which signals (traces, metrics) setup() will create a provider."""
    from otel_resilience.targets import BREAKER_TARGETS_ENV, RETRY_TARGETS_ENV

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
            value = env(variable)
            if value is not None:
                _checked_endpoint(variable, value)
    return Plan(
        traces=traces,
        metrics=metrics_exports,
        endpoint=endpoint,  # type: ignore[arg-type]
        service_name=service_name.strip() if isinstance(service_name, str) else None,
        libraries=_checked_libraries(libraries),
        attempt_spans=checked_setting("attempt_spans", ATTEMPT_SPANS_ENV, attempt_spans, ATTEMPT_SPANS_CHOICES),
        stacktraces=checked_setting("stacktraces", STACKTRACES_ENV, stacktraces, STACKTRACES_CHOICES),
        retry_targets=_checked_targets("retry_targets", retry_targets, variable=RETRY_TARGETS_ENV),
        breaker_targets=_checked_targets("breaker_targets", breaker_targets, variable=BREAKER_TARGETS_ENV),
    )
