"""OpenTelemetry instrumentation for `aiohttp-retry <https://github.com/inyutin/aiohttp_retry>`_: every attempt a
``RetryClient`` makes (``ExponentialRetry``, ``RandomRetry``, ``ListRetry``, ``FibonacciRetry``, ``JitterRetry`` or
your own options class), with its status code and the wait aiohttp-retry chose.

Usage::

    from otel_resilience.instrumentation.aiohttp_retry import AiohttpRetryInstrumentor

    AiohttpRetryInstrumentor().instrument()      # or otel_resilience.setup(), or opentelemetry-instrument

    async with RetryClient(retry_options=ExponentialRetry(attempts=3, statuses={503})) as client:
        async with client.get("https://api.example.com/users/1") as response:
            ...

Alone, each attempt is a CLIENT span named by the method with the stable HTTP attributes, ``retry.attempt``,
``http.request.resend_count`` from the second attempt on and ``retry.delay``; the last attempt carries
``retry.attempts`` and ``retry.result`` (``exhausted`` when aiohttp-retry ran out of attempts and returned the last
bad response, its default). Beside contrib's aiohttp-client instrumentation, which already makes one CLIENT span per
attempt, those spans are enriched instead: see ``docs/http.md``.
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.aiohttp_retry.package import _instruments


class AiohttpRetryInstrumentor(ResilienceInstrumentor):
    """Instruments aiohttp-retry's ``RetryClient`` request loop."""

    library = "aiohttp_retry"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.aiohttp_retry._adapter import AiohttpRetryAdapter

        AiohttpRetryAdapter(telemetry).patch(self.patches)


__all__ = ["AiohttpRetryInstrumentor"]
