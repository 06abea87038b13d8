"""OpenTelemetry instrumentation for retries in `httpx2 <https://pypi.org/project/httpx2/>`_, the fork of httpx with its
own packages (``httpx2``, ``httpcore2``) that openai 3.x and anthropic 2.x talk over: the same connection retries and
redirects as `otel_resilience.instrumentation.httpx`, by the same adapter given httpx2's modules.

Usage::

    from otel_resilience.instrumentation.httpx2 import Httpx2RetryInstrumentor

    Httpx2RetryInstrumentor().instrument()       # or otel_resilience.setup(), or opentelemetry-instrument

Beside contrib's ``HTTPX2ClientInstrumentor`` (entry point ``httpx2`` of opentelemetry-instrumentation-httpx) the
rules are those beside its httpx instrumentation: see ``docs/http.md``.
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.instrumentation.httpx._instrumentor import HttpxFlavourInstrumentor
from otel_resilience.instrumentation.httpx2.package import _instruments


class Httpx2RetryInstrumentor(HttpxFlavourInstrumentor):
    """Instruments httpcore2's connection pools (connection retries) and httpx2 clients' redirect loops."""

    library = "httpx2"
    _instruments: Collection[str] = _instruments
    httpcore = "httpcore2"


__all__ = ["Httpx2RetryInstrumentor"]
