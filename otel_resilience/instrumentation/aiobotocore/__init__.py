"""OpenTelemetry instrumentation for the retries of `aiobotocore <https://github.com/aio-libs/aiobotocore>`_: the
attempts of botocore's retry loop as aiobotocore awaits it (``AioEndpoint``), shown exactly as for botocore (see
`otel_resilience.instrumentation.botocore`).

Usage::

    from otel_resilience.instrumentation.aiobotocore import AiobotocoreRetryInstrumentor

    AiobotocoreRetryInstrumentor().instrument()  # or otel_resilience.setup(), or opentelemetry-instrument
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.aiobotocore.package import _instruments


class AiobotocoreRetryInstrumentor(ResilienceInstrumentor):
    """Instruments aiobotocore's retry loop (``AioEndpoint._send_request``)."""

    library = "aiobotocore"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.botocore._adapter import AsyncHooks, BotocoreAdapter

        AsyncHooks(BotocoreAdapter(telemetry)).patch(self.patches)


__all__ = ["AiobotocoreRetryInstrumentor"]
