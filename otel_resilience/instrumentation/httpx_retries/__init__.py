"""OpenTelemetry instrumentation for `httpx-retries <https://pypi.org/project/httpx-retries/>`_: each try of a
``RetryTransport`` is an attempt of one operation, with the wait it slept and its own verdict (``exhausted`` when its
retries are spent).

Usage::

    from otel_resilience.instrumentation.httpx_retries import HttpxRetriesInstrumentor

    HttpxRetriesInstrumentor().instrument()      # or otel_resilience.setup(), or opentelemetry-instrument

    client = httpx.Client(transport=RetryTransport(retry=Retry(total=3, backoff_factor=0.5)))

The attempts are the requests our httpx instrumentation sees through the wrapped transport, which must be
instrumented too (`setup()` and the launcher instrument both). See ``docs/http.md``.
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.httpx_retries.package import _instruments


class HttpxRetriesInstrumentor(ResilienceInstrumentor):
    """Instruments ``RetryTransport``'s loop and ``Retry``'s waits."""

    library = "httpx_retries"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.httpx_retries._adapter import HttpxRetriesAdapter

        HttpxRetriesAdapter(telemetry).patch(self.patches)


__all__ = ["HttpxRetriesInstrumentor"]
