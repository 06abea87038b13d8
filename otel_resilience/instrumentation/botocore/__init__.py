"""OpenTelemetry instrumentation for the retries of `botocore <https://github.com/boto/botocore>`_ (and boto3 on top
of it): every attempt of an AWS API call, with the delay botocore chose, its attempt limit and its retry quota, in the
standard, adaptive and legacy retry modes.

Usage::

    from otel_resilience.instrumentation.botocore import BotocoreRetryInstrumentor

    BotocoreRetryInstrumentor().instrument()     # or otel_resilience.setup(), or opentelemetry-instrument

    boto3.client("s3").list_buckets()

Alone, each attempt is a CLIENT span named after the call (``S3.ListBuckets``) with ``rpc.*``, the HTTP attributes,
``retry.attempt``, ``http.request.resend_count`` from the second attempt on and ``retry.delay``; the last attempt
carries ``retry.attempts``, ``retry.result``, ``retry.max_attempts`` and, when botocore's retry quota refused a retry,
``retry.budget_exhausted``. Beside contrib's botocore instrumentation (one span per API call), that span is enriched
instead: see ``docs/http.md``.
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.botocore.package import _instruments


class BotocoreRetryInstrumentor(ResilienceInstrumentor):
    """Instruments botocore's retry loop (``Endpoint._send_request``)."""

    library = "botocore"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.botocore._adapter import BotocoreAdapter

        BotocoreAdapter(telemetry).patch(self.patches)


__all__ = ["BotocoreRetryInstrumentor"]
