"""OpenTelemetry instrumentation for `purgatory <https://github.com/mardiros/purgatory>`_: one span per guarded block
with the circuit's name, the state it was admitted or refused in and its result; state changes as span events and
metrics.

Usage::

    from otel_resilience.instrumentation.purgatory import PurgatoryInstrumentor

    PurgatoryInstrumentor().instrument()         # or otel_resilience.setup(), or opentelemetry-instrument

    circuitbreaker = SyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)

    @circuitbreaker("payments")
    def charge(order): ...

    with circuitbreaker.get_breaker("payments"):
        ...

Traced, sync and async: ``SyncCircuitBreakerFactory`` and ``AsyncCircuitBreakerFactory``, ``with breaker:`` and
``async with breaker:`` (the span covers the block), and the factories' decorators (also applied before
instrumentation). purgatory's ``opened`` and ``half-opened`` are reported ``open`` and ``half_open``.
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.purgatory.package import _instruments


class PurgatoryInstrumentor(ResilienceInstrumentor):
    """Instruments purgatory's sync and async circuit breakers."""

    library = "purgatory"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.purgatory._adapter import PurgatoryAdapter

        PurgatoryAdapter(telemetry).patch(self.patches)


__all__ = ["PurgatoryInstrumentor"]
