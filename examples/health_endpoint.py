"""Serve ``otel_resilience.breakers()`` as a JSON health endpoint, with nothing but the standard library.

    python examples/health_endpoint.py                    # then: curl -s http://127.0.0.1:8080/health/breakers
    python examples/health_endpoint.py --port 9000

``GET /health/breakers`` answers ``200`` with every circuit breaker the process has used::

    {"status": "degraded",
     "breakers": [{"name": "payments", "library": "circuitbreaker", "state": "open",
                   "failure_count": 2, "last_transition": 1767225600.0}]}

``status`` is ``ok`` when every breaker is closed and ``degraded`` when one is open or half-open. The answer stays
``200`` either way: an open breaker means a dependency is failing and this process is coping, not that the process
should be restarted (a liveness probe that saw ``503`` would do just that). Add ``?strict`` to get ``503`` when
degraded, for a readiness probe that should take the instance out of rotation.

The snapshot lists breakers seen while the instrumentation records, i.e. with an SDK configured (usually by
``otel_resilience.setup()`` or the launcher; here SDK providers with no exporter, to keep the example quiet). It holds
the breakers weakly (one that is garbage collected leaves the list) and is safe to read from the server's threads.
"""

from __future__ import annotations

import argparse
import json
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

import otel_resilience

PATH = "/health/breakers"


def health() -> dict[str, Any]:
    """The health document: the snapshot, and whether any breaker is not closed."""
    snapshot = otel_resilience.breakers()
    degraded = any(b["state"] not in (None, "closed") for b in snapshot)
    return {"status": "degraded" if degraded else "ok", "breakers": snapshot}


class HealthHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        if url.path != PATH:
            self._send(HTTPStatus.NOT_FOUND, {"error": f"not found; try {PATH}"})
            return
        document = health()
        strict = "strict" in parse_qs(url.query, keep_blank_values=True)
        degraded = document["status"] == "degraded"
        self._send(HTTPStatus.SERVICE_UNAVAILABLE if strict and degraded else HTTPStatus.OK, document)

    def _send(self, status: HTTPStatus, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        """Quiet: a health endpoint is polled often."""


def make_server(host: str = "127.0.0.1", port: int = 8080) -> ThreadingHTTPServer:
    """A server for the endpoint (port 0: any free port; read it from ``server.server_address``)."""
    return ThreadingHTTPServer((host, port), HealthHandler)


def _trip_a_demo_breaker() -> None:
    """Give the endpoint something to show: a circuitbreaker breaker opened by two failures."""
    from circuitbreaker import circuit

    @circuit(failure_threshold=2, recovery_timeout=60, name="payments")
    def charge() -> None:
        raise ConnectionError("payment gateway down")

    for _ in range(2):
        try:
            charge()
        except ConnectionError:
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    handle = otel_resilience.setup(
        tracer_provider=TracerProvider(), meter_provider=MeterProvider(), libraries=["circuitbreaker"]
    )
    _trip_a_demo_breaker()
    server = make_server(args.host, args.port)
    print(f"serving http://{args.host}:{server.server_address[1]}{PATH}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        handle.shutdown()


if __name__ == "__main__":
    main()
