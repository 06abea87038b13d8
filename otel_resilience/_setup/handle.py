"""What `setup()` returns: the `Handle` that flushes, shuts down (within a bound, also at interpreter exit) and
uninstruments what setup() switched on."""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry import metrics, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

_logger = logging.getLogger("otel_resilience")

DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0
"""Seconds `Handle.shutdown()` and `Handle.force_flush()` wait at most (also at interpreter exit)."""


def each(items: list[Any], action: Callable[[Any], object]) -> None:
    """Apply `action` to every item even when one raises (one provider failing to shut down must not leave the
    other exporting for the rest of the process); then raise the first error, for `bounded` to log."""
    first: Exception | None = None
    for item in items:
        try:
            action(item)
        except Exception as exc:
            first = first or exc
    if first is not None:
        raise first


def bounded(work: Callable[[], object], timeout: float) -> bool:
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
    _released: Callable[[Handle], None] | None = field(default=None, repr=False)
    """Called by `uninstrument()`, so that the next `setup()` call starts afresh."""

    def force_flush(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Export what is buffered; True when every provider flushed within `timeout` seconds."""
        millis = int(timeout * 1000)
        providers = [p for p in (self.tracer_provider, self.meter_provider) if hasattr(p, "force_flush")]
        if not providers:
            return True
        results: list[bool] = []
        done = bounded(lambda: each(providers, lambda p: results.append(bool(p.force_flush(millis)))), timeout)
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
        return bounded(lambda: each(pairs, lambda pair: close(pair[0], pair[1], millis)), timeout)

    def uninstrument(self) -> None:
        """Remove what setup() patched (library instrumentors and drop-in targets), restoring every original."""
        for instrumentor in reversed(self._instrumentors):
            instrumentor.uninstrument()
        self._instrumentors.clear()
        if self._targets:
            from otel_resilience.targets import uninstrument_targets

            uninstrument_targets()
        self._targets = False
        self.instrumented = ()
        if self._released is not None:
            self._released(self)

    def _at_exit(self) -> None:
        self.shutdown()


def close(provider: object, owned: bool, millis: int) -> None:
    """Shut down a provider setup() created; only flush one that belongs to the app or the launcher."""
    if not owned:
        flush = getattr(provider, "force_flush", None)
        if callable(flush):
            flush(millis)
    elif isinstance(provider, metrics.MeterProvider):
        provider.shutdown(timeout_millis=millis)  # type: ignore[call-arg]
    else:
        provider.shutdown()  # type: ignore[attr-defined]
