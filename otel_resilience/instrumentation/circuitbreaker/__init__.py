"""OpenTelemetry instrumentation for `circuitbreaker <https://github.com/fabfuel/circuitbreaker>`_ (fabfuel): one span
per guarded call with the breaker's name, the state the call was admitted or refused in and its result; state changes
as span events and metrics.

Usage::

    from otel_resilience.instrumentation.circuitbreaker import CircuitBreakerInstrumentor

    CircuitBreakerInstrumentor().instrument()    # or otel_resilience.setup(), or opentelemetry-instrument

    @circuit(failure_threshold=5, recovery_timeout=30, name="payments")
    def charge(order): ...

Traced, sync and async: ``@circuit``, ``@circuit(cls=MyBreaker)`` and ``CircuitBreaker`` subclasses used as
decorators, ``breaker.call(f)``, generators and async generators (the span covers their consumption), also for
functions decorated before instrumentation. A call refused while open is ``rejected``, with or without a
``fallback_function``. circuitbreaker has no half-open state of its own: an open breaker past its recovery timeout is
reported ``half_open``, as its ``state`` property says.
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.circuitbreaker.package import _instruments


class CircuitBreakerInstrumentor(ResilienceInstrumentor):
    """Instruments ``circuitbreaker.CircuitBreaker`` (and so ``@circuit``)."""

    library = "circuitbreaker"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.circuitbreaker._adapter import CircuitBreakerAdapter

        CircuitBreakerAdapter(telemetry).patch(self.patches)


__all__ = ["CircuitBreakerInstrumentor"]
