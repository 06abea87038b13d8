"""OpenTelemetry instrumentation for `aiobreaker <https://github.com/arlyon/aiobreaker>`_: one span per guarded call
with the breaker's name, the state the call was admitted or refused in and its result; state changes as span events
and metrics.

Usage::

    from otel_resilience.instrumentation.aiobreaker import AioBreakerInstrumentor

    AioBreakerInstrumentor().instrument()        # or otel_resilience.setup(), or opentelemetry-instrument

    payments = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=30), name="payments")

    @payments
    async def charge(order): ...

Traced: ``await breaker.call_async(f)``, ``breaker.call(f)``, the ``@breaker`` decorator on ``async def`` and plain
functions (also applied before instrumentation), and guarded generators (the span covers their consumption). Refused
calls are ``rejected`` spans; the app's listeners are left alone and still told everything.
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.aiobreaker.package import _instruments


class AioBreakerInstrumentor(ResilienceInstrumentor):
    """Instruments ``aiobreaker.CircuitBreaker``."""

    library = "aiobreaker"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.aiobreaker._adapter import AioBreakerAdapter

        AioBreakerAdapter(telemetry).patch(self.patches)


__all__ = ["AioBreakerInstrumentor"]
