"""OpenTelemetry instrumentation for retries in `urllib3 <https://urllib3.readthedocs.io>`_, and in
`requests <https://requests.readthedocs.io>`_ on top of it: every attempt of a request (status retries, connection
and read errors, redirects) is visible, with the wait urllib3 chose between attempts.

Usage::

    from otel_resilience.instrumentation.urllib3 import Urllib3RetryInstrumentor

    Urllib3RetryInstrumentor().instrument()      # or otel_resilience.setup(), or opentelemetry-instrument

    session = requests.Session()
    session.mount("https://", HTTPAdapter(max_retries=Retry(total=3, status_forcelist=[503], backoff_factor=0.5)))
    session.get("https://api.example.com/users/1")

Alone, each attempt is a CLIENT span named by the method (``GET``) with the stable HTTP attributes, ``retry.attempt``,
``http.request.resend_count`` from the second attempt on and ``retry.delay`` (the wait urllib3 used: its backoff with
jitter, or ``Retry-After``); the last attempt carries ``retry.attempts`` and ``retry.result``. Beside contrib's
requests or urllib3 instrumentation (one span for the whole request), that span is enriched instead: see
``docs/http.md``. Redirects count as resends, also across requests' own redirect loop. The forms covered:
``HTTPAdapter(max_retries=...)``, ``PoolManager(retries=...)``, per-request ``retries=``, pools used directly.
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.urllib3.package import _instruments


class Urllib3RetryInstrumentor(ResilienceInstrumentor):
    """Instruments urllib3's retry loop, requests' sessions and adapters, and ``PoolManager`` redirects."""

    library = "urllib3"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.urllib3._adapter import Urllib3Adapter

        Urllib3Adapter(telemetry).patch(self.patches)


__all__ = ["Urllib3RetryInstrumentor"]
