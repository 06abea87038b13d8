"""OpenTelemetry instrumentation for `google-api-core <https://github.com/googleapis/python-api-core>`_, the retry
engine under every Google Cloud client library: one span per retried call and one child span per attempt (per stream
opened, for streaming retries), with the wait google-api-core drew and the error each attempt hit.

Usage::

    from otel_resilience.instrumentation.google_api_core import GoogleApiCoreInstrumentor

    GoogleApiCoreInstrumentor().instrument()     # or otel_resilience.setup(), or opentelemetry-instrument

    @retry.Retry(predicate=retry.if_exception_type(exceptions.ServiceUnavailable), timeout=30)
    def fetch_user(user_id): ...

``Retry``, ``AsyncRetry``, ``StreamingRetry`` and ``AsyncStreamingRetry`` (also objects and decorated functions made
before instrumenting), the ``retry_target*`` functions and generated clients' methods are traced. A generated client's
call is named by its RPC (``google.pubsub.v1.Publisher/Publish``). A deadline that ends the retries is ``exhausted``
with ``retry.stop_reason=timeout``; an error the predicate does not retry is ``not_retried``. For streams the operation
covers the consumption, and each stream (re-)opened is an attempt (see ``docs/retry-libraries.md``).
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.google_api_core.package import _instruments


class GoogleApiCoreInstrumentor(ResilienceInstrumentor):
    """Instruments google-api-core's four retry loops and generated clients' method calls."""

    library = "google_api_core"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.google_api_core._adapter import GoogleApiCoreAdapter

        GoogleApiCoreAdapter(telemetry).patch(self.patches)


__all__ = ["GoogleApiCoreInstrumentor"]
