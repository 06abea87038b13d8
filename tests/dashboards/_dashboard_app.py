"""The app behind the live Prometheus test (tests/dashboards/test_dashboard_live.py), run in a child process.

Its metrics are exposed through ``opentelemetry-exporter-prometheus`` (the SDK's `PrometheusMetricReader` on
prometheus_client's HTTP server), and it runs a scripted scenario through the real tenacity and pybreaker,
instrumented by `otel_resilience.setup()`. The scenario runs twice: once before the metrics server starts, so that
Prometheus's first scrape already holds every series (Prometheus takes a series' first sample as its baseline, so
counts made before it would be invisible to increase() and rate()), then once more, step by step, as the test asks on
stdin (``retries``, ``trip``, ``close``, ``exit``); the app answers each step with a line on stdout once it is done.

The scenario (the test derives every expected value from these constants):
- `fetch`: 20 operations under tenacity (3 attempts at most, WAIT between them): 13 succeed at once, 5 succeed on
  the third attempt (retried twice), 2 are exhausted after 3 attempts.
- `sync` retries (2 attempts, no wait) a call to `push`, itself retried (2 attempts, no wait) and always failing:
  one outermost operation exhausted after 2 attempts; two nested operations (retry.depth 2) exhausted after 2 each.
- breaker `payments` (pybreaker, fail_max 2, RESET s): 3 successes, 2 failures (the second trips it open), 3 calls
  rejected; then, after RESET, a probe that succeeds (open -> half_open -> closed) and 2 more successes.
"""

from __future__ import annotations

import sys
import time

import pybreaker
import tenacity

FAST, RETRIED_TWICE, EXHAUSTED = 13, 5, 2
MAX_ATTEMPTS = 3
WAIT = 0.15
"""Seconds between `fetch` attempts: an operation with 3 attempts lasts 0.3 s and some, inside the (0.25, 0.5]
bucket of retry.duration, while one attempt alone stays far below 0.25 s."""
NESTED_ATTEMPTS = 2
RESET = 1.5
"""pybreaker's reset timeout: long enough that the 3 calls right after the trip are surely rejected."""
BREAKER_NAME = "payments"
CLOSED_SUCCESSES_BEFORE, FAILURES, REJECTED, CLOSED_SUCCESSES_AFTER = 3, 2, 3, 2


class DependencyDown(Exception):
    """What the scripted dependency raises."""


_failures_left = 0


@tenacity.retry(stop=tenacity.stop_after_attempt(MAX_ATTEMPTS), wait=tenacity.wait_fixed(WAIT), reraise=True)
def fetch() -> str:
    global _failures_left
    if _failures_left:
        _failures_left -= 1
        raise DependencyDown("fetch")
    return "ok"


@tenacity.retry(stop=tenacity.stop_after_attempt(NESTED_ATTEMPTS), reraise=True)
def push() -> None:
    raise DependencyDown("push")


@tenacity.retry(stop=tenacity.stop_after_attempt(NESTED_ATTEMPTS), reraise=True)
def sync() -> None:
    push()


def run_retries() -> None:
    global _failures_left
    plan = [0] * FAST + [MAX_ATTEMPTS - 1] * RETRIED_TWICE + [MAX_ATTEMPTS] * EXHAUSTED
    for failures in plan:
        _failures_left = failures
        try:
            fetch()
        except DependencyDown:
            pass
    try:
        sync()
    except DependencyDown:
        pass


def guarded(fail: bool) -> str:
    if fail:
        raise DependencyDown("payments")
    return "paid"


def trip(breaker: pybreaker.CircuitBreaker) -> float:
    """Successes, then the failures that open the breaker, then the rejected calls; returns when it opened."""
    for _ in range(CLOSED_SUCCESSES_BEFORE):
        breaker.call(guarded, False)
    for _ in range(FAILURES):
        try:
            breaker.call(guarded, True)
        except (DependencyDown, pybreaker.CircuitBreakerError):
            pass
    opened = time.monotonic()
    for _ in range(REJECTED):
        try:
            breaker.call(guarded, False)
        except pybreaker.CircuitBreakerError:
            pass
        else:
            raise AssertionError("the breaker admitted a call while open")
    return opened


def close(breaker: pybreaker.CircuitBreaker, opened: float) -> None:
    """After the reset timeout: a probe that succeeds, then successes."""
    time.sleep(max(0.0, opened + RESET + 0.05 - time.monotonic()))  # the app's own wait, not a measurement
    for _ in range(1 + CLOSED_SUCCESSES_AFTER):
        breaker.call(guarded, False)
    assert breaker.current_state == pybreaker.STATE_CLOSED


def main() -> None:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from prometheus_client import start_http_server

    import otel_resilience

    port = int(sys.argv[1])
    meter_provider = MeterProvider(
        metric_readers=[PrometheusMetricReader()], resource=Resource.create({"service.name": "shop"})
    )
    otel_resilience.setup(
        tracer_provider=TracerProvider(), meter_provider=meter_provider, libraries=["tenacity", "pybreaker"]
    )
    breaker = pybreaker.CircuitBreaker(fail_max=FAILURES, reset_timeout=RESET, name=BREAKER_NAME)

    run_retries()  # the first round: every series exists before the first scrape
    close(breaker, trip(breaker))
    start_http_server(port, addr="127.0.0.1")
    print("ready", flush=True)

    opened = 0.0
    for line in sys.stdin:
        step = line.strip()
        if step == "retries":
            run_retries()
        elif step == "trip":
            opened = trip(breaker)
        elif step == "close":
            close(breaker, opened)
        elif step == "exit":
            return
        print(f"done {step}", flush=True)


if __name__ == "__main__":
    main()
