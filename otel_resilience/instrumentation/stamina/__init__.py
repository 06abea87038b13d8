"""OpenTelemetry instrumentation for `stamina <https://stamina.hynek.me>`_: one span per retried call and one child
span per attempt, with the wait stamina chose (jitter included) and the error each attempt hit.

Usage::

    from otel_resilience.instrumentation.stamina import StaminaInstrumentor

    StaminaInstrumentor().instrument()          # or otel_resilience.setup(), or opentelemetry-instrument

    @stamina.retry(on=httpx.HTTPError, attempts=3)
    def fetch_user(user_id): ...

All forms are traced, sync and async: ``@stamina.retry`` (also when decorated before instrumentation),
``for attempt in stamina.retry_context(...)``, ``async for``, ``RetryingCaller`` / ``AsyncRetryingCaller``, and the
``set_testing()`` and deactivated modes. stamina runs on tenacity: a stamina retry is recorded once, under the scope
``otel_resilience.stamina``, also when tenacity is instrumented too. stamina's own instrumentation hooks keep working
as before: nothing of ours is registered with stamina.
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.stamina.package import _instruments


class StaminaInstrumentor(ResilienceInstrumentor):
    """Instruments stamina's retry loops (and, for them only, the tenacity loop they run on)."""

    library = "stamina"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.stamina._adapter import StaminaAdapter

        StaminaAdapter(telemetry).patch(self.patches)


__all__ = ["StaminaInstrumentor"]
