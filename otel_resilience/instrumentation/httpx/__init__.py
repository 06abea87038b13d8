"""OpenTelemetry instrumentation for retries in `httpx <https://www.python-httpx.org>`_: the connection attempts that
``HTTPTransport(retries=N)`` / ``AsyncHTTPTransport(retries=N)`` make (httpcore retries a refused connection, a DNS or
TLS failure, after 0, 0.5, 1, 2 s...), and the redirects ``follow_redirects=True`` follows, sync and async.

Usage::

    from otel_resilience.instrumentation.httpx import HttpxRetryInstrumentor

    HttpxRetryInstrumentor().instrument()        # or otel_resilience.setup(), or opentelemetry-instrument

    client = httpx.Client(transport=httpx.HTTPTransport(retries=2))
    client.get("https://api.example.com/users/1")

Alone, each attempt is a CLIENT span named by the method with the stable HTTP attributes, ``retry.attempt``,
``http.request.resend_count`` from the second attempt on and ``retry.delay`` (the wait httpcore drew); the last attempt
carries ``retry.attempts`` and ``retry.result``. Beside contrib's httpx instrumentation (one span per transport call)
that span is enriched instead: see ``docs/http.md``. httpx does not retry on status codes: a 503 is one attempt.
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.instrumentation.httpx._instrumentor import HttpxFlavourInstrumentor
from otel_resilience.instrumentation.httpx.package import _instruments


class HttpxRetryInstrumentor(HttpxFlavourInstrumentor):
    """Instruments httpcore's connection pools (connection retries) and httpx clients' redirect loops."""

    library = "httpx"
    _instruments: Collection[str] = _instruments
    httpcore = "httpcore"


__all__ = ["HttpxRetryInstrumentor"]
