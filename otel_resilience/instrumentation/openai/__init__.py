"""OpenTelemetry instrumentation for the retries of the `OpenAI Python SDK <https://pypi.org/project/openai/>`_: each
try of the SDK's own retry loop (``max_retries``, default 2) is an attempt of one operation, with the wait the SDK
chose (``Retry-After``, ``retry-after-ms`` or its backoff), ``retry.max_attempts`` and the loop's result.

Usage::

    from otel_resilience.instrumentation.openai import OpenAIRetryInstrumentor

    OpenAIRetryInstrumentor().instrument()       # or otel_resilience.setup(), or opentelemetry-instrument

The attempts are the HTTP requests the SDK sends, seen by our httpx2 (or httpx, for ``http_client=httpx.Client()``)
instrumentation, which must be instrumented too (`setup()` and the launcher instrument both). See ``docs/http.md``.
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.instrumentation._stainless import StainlessRetryInstrumentor
from otel_resilience.instrumentation.openai.package import _instruments


class OpenAIRetryInstrumentor(StainlessRetryInstrumentor):
    """Instruments the retry loop of ``openai``'s ``SyncAPIClient`` and ``AsyncAPIClient``."""

    library = "openai"
    _instruments: Collection[str] = _instruments


__all__ = ["OpenAIRetryInstrumentor"]
