"""A small service with flaky dependencies, to see retries and a circuit breaker in traces.

    python examples/service.py                         # the console tree (otel_resilience.setup(exporter="console"))
    python examples/service.py --exporter otlp --endpoint http://localhost:4317
    OTEL_TRACES_EXPORTER=otlp python examples/service.py                # the standard OTEL_* variables decide
    opentelemetry-instrument python examples/service.py                 # unchanged under the launcher

It handles a fixed sequence of requests against two dependencies that fail on a fixed schedule (and the jitter
added to tenacity's backoff comes from a seeded generator of its own), so every run shows the same thing:

1. ``GET /users/1``: the user directory fails twice, tenacity retries, the third attempt succeeds.
2. ``GET /users/2``: the directory stays down, the retries are exhausted, the request fails.
3. ``POST /payments`` x3: the payment gateway fails, and the third failure opens pybreaker's breaker.
4. ``POST /payments``: the open breaker rejects the call without touching the gateway.
5. ``POST /payments``: after the breaker's reset timeout a probe is admitted half-open, succeeds, closes it.

Under ``opentelemetry-instrument`` the launcher has already configured the SDK and switched the instrumentation on;
`otel_resilience.setup()` sees that and changes nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import pybreaker
import tenacity
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

import otel_resilience

BREAKER_RESET_TIMEOUT = 0.05
"""Seconds pybreaker keeps the breaker open before admitting a probe (tiny, so the demo runs in a blink)."""


class DependencyDown(ConnectionError):
    """What a flaky dependency raises when it fails."""


class FlakyDependency:
    """A remote dependency that fails on a fixed schedule: `schedule` yields True for each call that fails."""

    def __init__(self, name: str, schedule: Iterable[bool]) -> None:
        self.name = name
        self._schedule: Iterator[bool] = iter(schedule)
        self.calls = 0

    def call(self, what: str) -> str:
        self.calls += 1
        if next(self._schedule, False):
            raise DependencyDown(f"{self.name} unavailable while handling {what}")
        return f"{self.name}: {what} ok"


# The user directory fails twice for user 1, then four times in a row for user 2.
directory = FlakyDependency("user-directory", [True, True, False, True, True, True, True])
# The payment gateway fails three times (opening the breaker), then recovers.
gateway = FlakyDependency("payment-gateway", [True, True, True, False])

_jitter = random.Random(7)


def seeded_jitter(retry_state: tenacity.RetryCallState) -> float:
    """Up to half a millisecond of jitter from the demo's own seeded generator (never the global `random`, which
    OpenTelemetry's trace-id generator uses)."""
    return _jitter.uniform(0, 0.0005)


payments_breaker = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=BREAKER_RESET_TIMEOUT, name="payments")


@tenacity.retry(
    stop=tenacity.stop_after_attempt(4),
    wait=tenacity.wait_exponential(multiplier=0.001, max=0.004) + seeded_jitter,  # 1 ms, 2 ms, 4 ms, + jitter
    retry=tenacity.retry_if_exception_type(DependencyDown),
    reraise=True,
)
def fetch_user(user_id: int) -> str:
    return directory.call(f"user {user_id}")


@payments_breaker
def charge(amount: int) -> str:
    return gateway.call(f"charge {amount}")


tracer = trace.get_tracer("examples.service")


def handle(route: str, work: Callable[[], str]) -> str:
    """One request: a SERVER span named by its route, the work inside it, the outcome as an HTTP status."""
    with tracer.start_as_current_span(route, kind=SpanKind.SERVER, attributes={"http.route": route}) as span:
        try:
            result = work()
        except (DependencyDown, pybreaker.CircuitBreakerError) as exc:
            span.set_attribute("http.response.status_code", 503)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            return f"503 ({type(exc).__name__}: {exc})"
        span.set_attribute("http.response.status_code", 200)
        return f"200 ({result})"


class Request(NamedTuple):
    shows: str
    route: str
    label: str
    work: Callable[[], str]
    pause_before: float = 0.0


REQUESTS = (
    Request("retries succeed", "GET /users/{id}", "GET /users/1", lambda: fetch_user(1)),
    Request("retries exhausted", "GET /users/{id}", "GET /users/2", lambda: fetch_user(2)),
    Request("a payment fails (1 of 3)", "POST /payments", "POST /payments 10", lambda: charge(10)),
    Request("a payment fails (2 of 3)", "POST /payments", "POST /payments 20", lambda: charge(20)),
    Request("the third failure opens the breaker", "POST /payments", "POST /payments 30", lambda: charge(30)),
    Request("the open breaker rejects", "POST /payments", "POST /payments 40", lambda: charge(40)),
    Request(
        "after the reset timeout a half-open probe closes it",
        "POST /payments",
        "POST /payments 50",
        lambda: charge(50),
        pause_before=BREAKER_RESET_TIMEOUT * 2,
    ),
)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--exporter",
        choices=("console", "otlp", "none"),
        default=None,
        help="where telemetry goes (default: the console tree, unless OTEL_TRACES_EXPORTER is set)",
    )
    parser.add_argument("--protocol", choices=("grpc", "http/protobuf"), default=None, help="OTLP protocol")
    parser.add_argument("--endpoint", default=None, help="OTLP endpoint, e.g. http://localhost:4317")
    parser.add_argument("--seed", type=int, default=7, help="seed of the retry jitter (default 7)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    _jitter.seed(args.seed)
    exporter = args.exporter or (None if os.environ.get("OTEL_TRACES_EXPORTER") else "console")
    telemetry = otel_resilience.setup(
        exporter=exporter, protocol=args.protocol, endpoint=args.endpoint, service_name="resilience-demo"
    )
    for number, request in enumerate(REQUESTS, start=1):
        time.sleep(request.pause_before)
        print(f"[{number}] {request.shows}: {request.label}", flush=True)
        outcome = handle(request.route, request.work)
        telemetry.force_flush()  # keeps the printed trees in step with these lines under any span processor
        print(f"    -> {outcome}\n", flush=True)
    telemetry.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
