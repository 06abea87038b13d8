"""tenacity: a call succeeding first time, and one failing twice then succeeding (tenacity's sleep a no-op)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import tenacity
from opentelemetry.trace import Status, StatusCode

from benchmarks.conftest import Sdk, variant
from otel_resilience import semconv
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor

FAILURES = {"first_try": 0, "fail_twice": 2}


def _no_sleep(_: float) -> None:
    """tenacity's sleep replaced: the benchmark measures work, not waiting."""


def make_work(failures: int) -> Callable[[], str]:
    state = {"n": 0}

    def fetch_user() -> str:
        state["n"] += 1
        if state["n"] % (failures + 1) != 0:
            raise ConnectionError("down")
        return "user"

    return fetch_user


def decorated(work: Callable[[], str]) -> Callable[[], str]:
    return tenacity.retry(stop=tenacity.stop_after_attempt(5), wait=tenacity.wait_fixed(0.1), sleep=_no_sleep)(work)


@pytest.fixture
def instrumented(sdk: Sdk) -> Iterator[Sdk]:
    TenacityInstrumentor().instrument(**sdk.kwargs())
    yield sdk
    TenacityInstrumentor().uninstrument()


@pytest.fixture
def instrumented_no_sdk() -> Iterator[None]:
    TenacityInstrumentor().instrument()
    yield
    TenacityInstrumentor().uninstrument()


@pytest.mark.parametrize("scenario", FAILURES)
def test_bare(benchmark: Any, scenario: str) -> None:
    variant(benchmark, f"tenacity {scenario}", "bare")
    assert benchmark(decorated(make_work(FAILURES[scenario]))) == "user"


@pytest.mark.parametrize("scenario", FAILURES)
def test_no_sdk(benchmark: Any, scenario: str, instrumented_no_sdk: None) -> None:
    variant(benchmark, f"tenacity {scenario}", "no_sdk")
    assert benchmark(decorated(make_work(FAILURES[scenario]))) == "user"


@pytest.mark.parametrize("scenario", FAILURES)
def test_instrumented(benchmark: Any, scenario: str, instrumented: Sdk) -> None:
    variant(benchmark, f"tenacity {scenario}", "instrumented")
    assert benchmark(decorated(make_work(FAILURES[scenario]))) == "user"


@pytest.mark.parametrize("scenario", FAILURES)
def test_hand_built(benchmark: Any, scenario: str, sdk: Sdk) -> None:
    """Plain tenacity, with the same spans (names, attributes, events, status) and metric points made by hand."""
    variant(benchmark, f"tenacity {scenario}", "hand_built")
    tracer = sdk.tracer_provider.get_tracer("hand")
    meter = sdk.meter_provider.get_meter("hand")
    attempts_hist = meter.create_histogram(semconv.METRIC_RETRY_ATTEMPTS)
    duration_hist = meter.create_histogram(semconv.METRIC_RETRY_DURATION)
    work = make_work(FAILURES[scenario])
    name, qualname = f"{__name__}.fetch_user", "fetch_user"
    error = Status(StatusCode.ERROR)

    def call() -> str:
        counter = {"attempt": 0}
        with tracer.start_as_current_span(
            f"retry {qualname}", attributes={semconv.RETRY_NAME: name, semconv.RETRY_DEPTH: 1, semconv.RETRY_MAX_ATTEMPTS: 5}
        ) as op:

            def attempt() -> str:
                counter["attempt"] += 1
                with tracer.start_as_current_span(
                    qualname,
                    attributes={semconv.RETRY_NAME: name, semconv.RETRY_ATTEMPT: counter["attempt"]},
                    record_exception=False,
                    set_status_on_exception=False,
                ) as span:
                    try:
                        return work()
                    except ConnectionError as exc:
                        span.set_attributes({semconv.RETRY_DELAY: 0.1, semconv.ERROR_TYPE: "ConnectionError"})
                        span.set_status(error)
                        span.add_event("exception", {"exception.type": "ConnectionError", "exception.message": str(exc)})
                        raise

            result = tenacity.retry(stop=tenacity.stop_after_attempt(5), wait=tenacity.wait_fixed(0.1), sleep=_no_sleep)(attempt)()
            op.set_attributes({semconv.RETRY_ATTEMPTS: counter["attempt"], semconv.RETRY_RESULT: "success",
                               semconv.RETRY_TOTAL_DELAY: 0.1 * (counter["attempt"] - 1)})
        attempts_hist.record(counter["attempt"], {semconv.RETRY_NAME: name, semconv.RETRY_RESULT: "success", semconv.RETRY_DEPTH: 1})
        duration_hist.record(0.001, {semconv.RETRY_NAME: name, semconv.RETRY_RESULT: "success"})
        return result

    assert benchmark(call) == "user"
