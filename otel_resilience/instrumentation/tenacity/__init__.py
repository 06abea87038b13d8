"""OpenTelemetry instrumentation for `tenacity <https://tenacity.readthedocs.io>`_: one span per retried operation
and one child span per attempt, with the wait tenacity chose and the error each attempt hit.

Usage::

    from otel_resilience.instrumentation.tenacity import TenacityInstrumentor

    TenacityInstrumentor().instrument()          # or otel_resilience.setup(), or opentelemetry-instrument

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_exponential())
    def fetch_user(user_id): ...

All forms are traced, sync and async: ``@retry`` on functions, methods and ``async def`` (also when decorated before
instrumentation), ``Retrying(...)(fn)``, ``for attempt in Retrying(...): with attempt:``, ``AsyncRetrying`` and
``async for attempt in AsyncRetrying(...)``. Forms with no function are named after the function they are written in.
A result rejected by ``retry_if_result`` is a failed attempt with ``error.type`` = ``rejected_result``.
"""

from __future__ import annotations

from collections.abc import Collection
from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.tenacity.package import _instruments


class TenacityInstrumentor(ResilienceInstrumentor):
    """Instruments tenacity's ``Retrying``, ``AsyncRetrying`` and the iterator forms."""

    library = "tenacity"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.tenacity._adapter import TenacityAdapter

        TenacityAdapter(telemetry).patch(self.patches)


__all__ = ["TenacityInstrumentor"]
