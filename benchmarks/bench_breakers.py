"""circuitbreaker, aiobreaker and purgatory: a call through a closed breaker, and one refused by an open breaker.

Each scenario runs in the four variants of `benchmarks.conftest` (bare, no_sdk, hand_built, instrumented). The
hand-built variant wraps the bare library call in the span and the counter point our instrumentation emits for it
(same name, attributes, status and, where we record one, exception event), made by hand with the OpenTelemetry API:
the ratio instrumented ÷ hand-built is what the instrumentation costs beyond its telemetry.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import aiobreaker
import circuitbreaker
import pytest
from opentelemetry.trace import Span, Status, StatusCode
from purgatory import SyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from benchmarks.conftest import Sdk, instrumented_fixtures, variant
from otel_resilience import semconv
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.aiobreaker import AioBreakerInstrumentor
from otel_resilience.instrumentation.circuitbreaker import CircuitBreakerInstrumentor
from otel_resilience.instrumentation.purgatory import PurgatoryInstrumentor

NAME = "bench"

PRODUCTION_SETUPS_TOO = True  # instrumented and hand_built also run sampled out and without a metrics SDK


def ok() -> str:
    return "ok"


def fail() -> None:
    raise ConnectionError("down")


@dataclass
class Scenario:
    """One breaker in one state: `call()` makes one guarded call and returns its result, or the refusal error."""

    state: str
    call: Callable[[], Any]
    refusal_type: str  # `error.type` of a refused call
    refusal_event: bool  # whether our refused span carries an exception event (not for circuitbreaker: no object)
    failure_count: int | None


def _circuitbreaker(state: str) -> Scenario:
    breaker = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=3600, name=NAME)
    guarded = breaker(ok)
    if state == "open":
        try:
            breaker.call(fail)
        except ConnectionError:
            pass

    def call() -> Any:
        try:
            return guarded()
        except circuitbreaker.CircuitBreakerError as exc:
            return exc

    return Scenario(state, call, "circuitbreaker.CircuitBreakerError", False, 1 if state == "open" else 0)


def _aiobreaker(state: str) -> Scenario:
    breaker = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(hours=1), name=NAME)
    if state == "open":
        breaker.open()

    def call() -> Any:
        try:
            return breaker.call(ok)
        except aiobreaker.CircuitBreakerError as exc:
            return exc

    return Scenario(state, call, "aiobreaker.state.CircuitBreakerError", True, 0)


def _purgatory(state: str) -> Scenario:
    factory = SyncCircuitBreakerFactory(default_threshold=1, default_ttl=3600)
    if state == "open":
        try:
            with factory.get_breaker(NAME):
                fail()
        except ConnectionError:
            pass

    def call() -> Any:
        try:
            with factory.get_breaker(NAME):
                return ok()
        except OpenedState as exc:
            # purgatory raises one OpenedState object again and again, and every raise extends its traceback: left
            # alone, each refused call would cost more than the one before, in every variant.
            exc.__traceback__ = None
            return exc

    return Scenario(state, call, "purgatory.domain.model.OpenedState", True, None if state == "open" else 0)


LIBRARIES: dict[str, tuple[Callable[[str], Scenario], type[ResilienceInstrumentor]]] = {
    "circuitbreaker": (_circuitbreaker, CircuitBreakerInstrumentor),
    "aiobreaker": (_aiobreaker, AioBreakerInstrumentor),
    "purgatory": (_purgatory, PurgatoryInstrumentor),
}
SCENARIOS = [f"{library} {state}" for library in LIBRARIES for state in ("closed", "open")]


def scenario(group: str) -> Scenario:
    library, state = group.split()
    return LIBRARIES[library][0](state)


def instrumentor(request: pytest.FixtureRequest) -> ResilienceInstrumentor:
    return LIBRARIES[request.node.callspec.params["group"].split()[0]][1]()


instrumented, instrumented_no_sdk = instrumented_fixtures(instrumentor)


@pytest.mark.parametrize("group", SCENARIOS)
def test_bare(benchmark: Any, group: str) -> None:
    variant(benchmark, group, "bare")
    benchmark(scenario(group).call)


@pytest.mark.parametrize("group", SCENARIOS)
def test_no_sdk(benchmark: Any, group: str, instrumented_no_sdk: None) -> None:
    variant(benchmark, group, "no_sdk")
    benchmark(scenario(group).call)


@pytest.mark.parametrize("group", SCENARIOS)
def test_instrumented(benchmark: Any, group: str, instrumented: Sdk) -> None:
    variant(benchmark, group, "instrumented", instrumented)
    benchmark(scenario(group).call)


@pytest.mark.parametrize("group", SCENARIOS)
def test_hand_built(benchmark: Any, group: str, sdk: Sdk) -> None:
    """The bare call inside one span with the same attributes (and event), and the same counter point, by hand."""
    variant(benchmark, group, "hand_built", sdk)
    benchmark(hand_built(group, sdk))


class BreakerFloor:
    """The telemetry our instrumentation gives one breaker call, made by hand with the API: one span with the same
    attributes (and event), and the same counter point. The sync (`hand_built`) and async
    (`benchmarks.bench_async`) breaker scenarios' `hand_built` variants build it alike; only the awaiting differs."""

    def __init__(self, sdk: Sdk, bench: Scenario) -> None:
        self.tracer = sdk.tracer_provider.get_tracer("hand")
        self.calls = sdk.meter_provider.get_meter("hand").create_counter(semconv.METRIC_BREAKER_CALLS)
        self.bench = bench

    def span(self) -> AbstractContextManager[Span]:
        return self.tracer.start_as_current_span(
            f"circuitbreaker {NAME}", attributes={semconv.BREAKER_NAME: NAME}, record_exception=False,
            set_status_on_exception=False,
        )

    def ended(self, span: Span, result: Any) -> str:
        """The call returned `result` (or the refusal error): the span's end attributes (and event, status); returns
        `circuitbreaker.result`, for the counter point made once the span has ended."""
        bench = self.bench
        attributes: dict[str, Any] = {semconv.BREAKER_STATE: bench.state}
        if isinstance(result, Exception):
            attributes[semconv.BREAKER_RESULT] = semconv.CALL_REJECTED
            attributes[semconv.ERROR_TYPE] = bench.refusal_type
            if bench.refusal_event:
                span.add_event(
                    semconv.EXCEPTION_EVENT,
                    {semconv.EXCEPTION_TYPE: bench.refusal_type, semconv.EXCEPTION_MESSAGE: str(result)},
                )
            span.set_status(_ERROR)
        else:
            attributes[semconv.BREAKER_RESULT] = semconv.CALL_SUCCESS
        if bench.failure_count is not None:
            attributes[semconv.BREAKER_FAILURE_COUNT] = bench.failure_count
        span.set_attributes(attributes)
        return attributes[semconv.BREAKER_RESULT]

    def count(self, result: str) -> None:
        self.calls.add(1, {semconv.BREAKER_NAME: NAME, semconv.BREAKER_STATE: self.bench.state,
                           semconv.BREAKER_RESULT: result})


_ERROR = Status(StatusCode.ERROR)


def hand_built(group: str, sdk: Sdk) -> Callable[[], Any]:
    floor = BreakerFloor(sdk, scenario(group))
    guarded = floor.bench.call

    def call() -> Any:
        with floor.span() as span:
            result = guarded()
            outcome = floor.ended(span, result)
        floor.count(outcome)
        return result

    return call
