"""OpenTelemetry instrumentation for `pybreaker <https://github.com/danielfm/pybreaker>`_: one span per guarded call
with the breaker's name, the state the call was admitted or refused in, and its result; state changes as span events
and metrics.

Usage::

    from otel_resilience.instrumentation.pybreaker import PyBreakerInstrumentor

    PyBreakerInstrumentor().instrument()         # or otel_resilience.setup(), or opentelemetry-instrument

    payments = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, name="payments")

    @payments
    def charge(order): ...

Traced: ``breaker.call(f)``, the decorator (also applied before instrumentation) and ``with breaker.calling():``
(the span covers the block), and guarded generators (the span covers their consumption). Refused calls, which
pybreaker's listeners never hear of, are ``rejected`` spans. Tornado's ``call_async`` is not traced.
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.pybreaker.package import _instruments


class PyBreakerInstrumentor(ResilienceInstrumentor):
    """Instruments ``pybreaker.CircuitBreaker``."""

    library = "pybreaker"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.pybreaker._adapter import PyBreakerAdapter

        PyBreakerAdapter(telemetry).patch(self.patches)


__all__ = ["PyBreakerInstrumentor"]
