"""OpenTelemetry instrumentation for the retries of the `Anthropic Python SDK <https://pypi.org/project/anthropic/>`_: each
try of the SDK's own retry loop (``max_retries``, default 2) is an attempt of one operation, with the wait the SDK
chose (``Retry-After``, ``retry-after-ms`` or its backoff), ``retry.max_attempts`` and the loop's result.

Usage::

    from otel_resilience.instrumentation.anthropic import AnthropicRetryInstrumentor

    AnthropicRetryInstrumentor().instrument()    # or otel_resilience.setup(), or opentelemetry-instrument

The attempts are the HTTP requests the SDK sends, seen by our httpx2 (or httpx) instrumentation, which must be
instrumented too (`setup()` and the launcher instrument both); they hang under the SDK's own API-call span when its
tracing is on. See ``docs/http.md``.
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.instrumentation._stainless import StainlessRetryInstrumentor
from otel_resilience.instrumentation.anthropic.package import _instruments


class AnthropicRetryInstrumentor(StainlessRetryInstrumentor):
    """Instruments the retry loop of ``anthropic``'s ``SyncAPIClient`` and ``AsyncAPIClient``."""

    library = "anthropic"
    _instruments: Collection[str] = _instruments


__all__ = ["AnthropicRetryInstrumentor"]
