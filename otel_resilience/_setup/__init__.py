"""`setup()`: the explicit way in. One call configures export when the app has none, instruments every installed
supported library, and returns a `Handle` the app can flush and shut down (docs/setup.md says what it does, in order).

- `validation`: every input checked first, into a `Plan` (one `ValueError` naming what was wrong and what is accepted);
- `providers`: the SDK providers and exporters for the signals that have none yet (the SDK is imported only then);
- `ids`: span and trace ids that never come from the app's global `random`;
- `instrumenting`: the instrumentors and drop-in targets switched on;
- `handle`: what setup() returns; shutdown is bounded, also at interpreter exit;
- `launcher`: our hooks that run under ``opentelemetry-instrument`` before the instrumentors.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Iterable
from typing import Any, Final

from opentelemetry import metrics, trace

from otel_resilience._setup.handle import DEFAULT_SHUTDOWN_TIMEOUT, Handle, bounded, close
from otel_resilience._setup.instrumenting import instrument, instrument_targets, load_instrumentor
from otel_resilience._setup.launcher import settings_from_environment
from otel_resilience._setup.providers import (
    INSTALL_HINT,
    global_meter_provider,
    global_tracer_provider,
    new_providers,
)
from otel_resilience._setup.validation import EXPORTERS, LIBRARIES, PROTOCOLS, Plan, make_plan
from otel_resilience.core.config import SETTINGS
from otel_resilience.instrumentation import INSTRUMENTORS

_logger = logging.getLogger("otel_resilience")

_LOCK: Final = threading.RLock()
_HANDLE: Handle | None = None


def _release(handle: Handle) -> None:
    """`Handle.uninstrument()` was called: the next `setup()` starts afresh."""
    global _HANDLE
    with _LOCK:
        if _HANDLE is handle:
            _HANDLE = None


def _check_ids(provider: object) -> None:
    """A provider the app (or its caller) built with the SDK's default id generator draws ids from the global
    `random`: say once what to do. It is the app's provider, so it stays as it is."""
    try:
        from opentelemetry.environment_variables import OTEL_PYTHON_ID_GENERATOR

        from otel_resilience._environment import env
        from otel_resilience._setup.ids import ADVICE, draws_from_global_random
    except ImportError:
        return
    if draws_from_global_random(provider) and env(OTEL_PYTHON_ID_GENERATOR) is None:
        _logger.warning(
            "otel_resilience: the tracer provider draws span ids from the global random module, so tracing changes "
            "what an app that seeds random does; %s",
            ADVICE,
        )


def _apply_settings(plan: Plan) -> None:
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

    - `exporter`: ``"otlp"``, ``"console"`` (the trace trees, and a metrics summary at exit) or ``"none"``; default
      ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``, else ``otlp``. Used only for a signal whose provider
      setup() creates.
    - `protocol`: ``"grpc"`` or ``"http/protobuf"``; default ``OTEL_EXPORTER_OTLP_[SIGNAL_]PROTOCOL``, else gRPC.
    - `endpoint`: the collector's base URL (``http://host:4317`` for gRPC, ``http://host:4318`` for HTTP, where
      ``/v1/traces`` and ``/v1/metrics`` are appended); default the ``OTEL_EXPORTER_OTLP_*ENDPOINT`` variables.
    - `service_name`: ``service.name``; default ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``.
    - `tracer_provider`, `meter_provider`: use these (as contrib instrumentors accept); otherwise the global ones when
      configured, otherwise new SDK providers that become global.
    - `attempt_spans` (``all``, ``on_retry``, ``none``) and `stacktraces` (``final``, ``all``, ``none``): default their
      ``OTEL_PYTHON_RESILIENCE_*`` variables.

    Idempotent: a second call checks its arguments, then returns the same `Handle` and changes nothing. Raises
    `ValueError` for wrong input and `ImportError` (saying ``pip install 'otel-resilience[otlp]'``) when export must
    be configured without the SDK. A tracer provider it creates draws span ids from a private source; one it is given
    or finds that draws them from the global `random` is left as it is, with one warning saying what to do.
    """
    global _HANDLE
    with _LOCK:
        tracer_provider = tracer_provider or global_tracer_provider()
        meter_provider = meter_provider or global_meter_provider()
        plan = make_plan(
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
        new_tracer_provider, new_meter_provider = new_providers(plan)
        kwargs: dict[str, Any] = {
            "tracer_provider": tracer_provider or new_tracer_provider,
            "meter_provider": meter_provider or new_meter_provider,
        }
        try:
            targets = instrument_targets(plan, kwargs)  # the last check that can raise ValueError: the app's modules
        except BaseException:
            bounded(lambda: [close(p, True, 1000) for p in (new_tracer_provider, new_meter_provider) if p], 1.0)
            raise
        if new_tracer_provider is not None:
            trace.set_tracer_provider(new_tracer_provider)
        if new_meter_provider is not None:
            metrics.set_meter_provider(new_meter_provider)
        _apply_settings(plan)
        if new_tracer_provider is None:
            _check_ids(kwargs["tracer_provider"])
        instrumentors = instrument(plan.libraries, kwargs)
        handle = Handle(
            tracer_provider=kwargs["tracer_provider"],
            meter_provider=kwargs["meter_provider"],
            owns_tracer_provider=new_tracer_provider is not None,
            owns_meter_provider=new_meter_provider is not None,
            instrumented=tuple(name for name, _ in instrumentors),
            _instrumentors=[instrumentor for _, instrumentor in instrumentors],
            _targets=targets,
            _released=_release,
        )
        if new_tracer_provider is not None or new_meter_provider is not None:
            atexit.register(handle._at_exit)
        _HANDLE = handle
        return handle


__all__ = [
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "EXPORTERS",
    "INSTALL_HINT",
    "INSTRUMENTORS",
    "LIBRARIES",
    "PROTOCOLS",
    "Handle",
    "load_instrumentor",
    "settings_from_environment",
    "setup",
]
