"""pybreaker: a call through a closed breaker, and one refused by an open breaker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pybreaker
import pytest
from opentelemetry.trace import Status, StatusCode

from benchmarks.conftest import Sdk, instrumented_fixtures, variant
from otel_resilience import semconv
from otel_resilience.instrumentation.pybreaker import PyBreakerInstrumentor

STATES = ("closed", "open")

PRODUCTION_SETUPS_TOO = True  # instrumented and hand_built also run sampled out and without a metrics SDK


def ok() -> str:
    return "ok"


def breaker_in(state: str) -> pybreaker.CircuitBreaker:
    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=3600, name="bench")
    if state == "open":
        breaker.open()
    return breaker


def calling(breaker: pybreaker.CircuitBreaker) -> Callable[[], Any]:
    def call() -> Any:
        try:
            return breaker.call(ok)
        except pybreaker.CircuitBreakerError:
            return "rejected"

    return call


instrumented, instrumented_no_sdk = instrumented_fixtures(lambda _request: PyBreakerInstrumentor())


@pytest.mark.parametrize("state", STATES)
def test_bare(benchmark: Any, state: str) -> None:
    variant(benchmark, f"pybreaker {state}", "bare")
    benchmark(calling(breaker_in(state)))


@pytest.mark.parametrize("state", STATES)
def test_no_sdk(benchmark: Any, state: str, instrumented_no_sdk: None) -> None:
    variant(benchmark, f"pybreaker {state}", "no_sdk")
    benchmark(calling(breaker_in(state)))


@pytest.mark.parametrize("state", STATES)
def test_instrumented(benchmark: Any, state: str, instrumented: Sdk) -> None:
    variant(benchmark, f"pybreaker {state}", "instrumented", instrumented)
    benchmark(calling(breaker_in(state)))


@pytest.mark.parametrize("state", STATES)
def test_hand_built(benchmark: Any, state: str, sdk: Sdk) -> None:
    """Plain pybreaker inside one span with the same attributes, and the same counter point, made by hand."""
    variant(benchmark, f"pybreaker {state}", "hand_built", sdk)
    benchmark(hand_built(state, sdk))


def hand_built(state: str, sdk: Sdk) -> Callable[[], Any]:
    tracer = sdk.tracer_provider.get_tracer("hand")
    calls = sdk.meter_provider.get_meter("hand").create_counter(semconv.METRIC_BREAKER_CALLS)
    breaker = breaker_in(state)
    error = Status(StatusCode.ERROR)

    def call() -> Any:
        with tracer.start_as_current_span(
            "circuitbreaker bench", attributes={semconv.BREAKER_NAME: "bench"}, record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = breaker.call(ok)
                outcome = semconv.CALL_SUCCESS
            except pybreaker.CircuitBreakerError as exc:
                result, outcome = "rejected", semconv.CALL_REJECTED
                span.set_attribute(semconv.ERROR_TYPE, "pybreaker.CircuitBreakerError")
                span.add_event("exception", {"exception.type": "pybreaker.CircuitBreakerError", "exception.message": str(exc)})
                span.set_status(error)
            span.set_attributes({semconv.BREAKER_STATE: state, semconv.BREAKER_RESULT: outcome, semconv.BREAKER_FAILURE_COUNT: 0})
        calls.add(1, {semconv.BREAKER_NAME: "bench", semconv.BREAKER_STATE: state, semconv.BREAKER_RESULT: outcome})
        return result

    return call
