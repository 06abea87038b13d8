"""Async retry libraries and breakers: tenacity (``@retry`` on a coroutine function: ``AsyncRetrying``), backoff (a
decorated coroutine function) and stamina (``@stamina.retry`` on a coroutine function), a call succeeding first time
and one failing twice then succeeding (the libraries' sleeps are no-ops); purgatory's async breaker (``async with``),
circuitbreaker on a coroutine function and aiobreaker's ``call_async``, through a closed and an open breaker.

Each scenario runs in the variants of `benchmarks.conftest` (bare, no_sdk, hand_built, instrumented, and the production
set-ups), its hand-built floor the sync scenarios' (`conftest.RetryFloor`, `bench_breakers.BreakerFloor`) awaited.

The event loop's cost is the same in every variant: none. Each call's coroutine is run to completion by `driven`
(``coroutine.send(None)``), which is what ``await`` does with a coroutine that never suspends inside a running task:
the loop only steps in when something waits, and nothing here does (a call that suspends is an error). So the
figures are the async call's own cost, as for the sync scenarios, not a loop iteration per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import aiobreaker
import backoff
import backoff._async
import circuitbreaker
import pytest
import stamina
import stamina._core
import tenacity
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState
from stamina.instrumentation import set_on_retry_hooks

from benchmarks import bench_breakers
from benchmarks.bench_breakers import NAME, BreakerFloor
from benchmarks.conftest import RetryFloor, Sdk, instrumented_fixtures, make_work, variant
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.aiobreaker import AioBreakerInstrumentor
from otel_resilience.instrumentation.backoff import BackoffInstrumentor
from otel_resilience.instrumentation.circuitbreaker import CircuitBreakerInstrumentor
from otel_resilience.instrumentation.purgatory import PurgatoryInstrumentor
from otel_resilience.instrumentation.stamina import StaminaInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor

FAILURES = {"first_try": 0, "fail_twice": 2}
WAIT = 0.1
AsyncWork = Callable[[], Coroutine[Any, Any, Any]]

PRODUCTION_SETUPS_TOO = True  # instrumented and hand_built also run sampled out and without a metrics SDK


def driven(call: AsyncWork) -> Callable[[], Any]:
    """`call()`'s coroutine run to completion here, as ``await`` runs one that never suspends (see the docstring)."""

    def run() -> Any:
        coroutine = call()
        try:
            coroutine.send(None)
        except StopIteration as done:
            return done.value
        coroutine.close()
        raise RuntimeError("the benchmarked call suspended: it would need the event loop")

    return run


async def _no_sleep(_seconds: float) -> None:
    """The libraries' sleep replaced: the benchmark measures work, not waiting."""


# --- retry libraries -------------------------------------------------------------------------------------------------


def make_async_work(failures: int) -> AsyncWork:
    """`conftest.make_work`'s operation as a coroutine function."""
    work = make_work(failures)

    async def fetch_user() -> str:
        return work()

    return fetch_user


def _tenacity(fn: AsyncWork) -> AsyncWork:
    return tenacity.retry(stop=tenacity.stop_after_attempt(5), wait=tenacity.wait_fixed(WAIT), sleep=_no_sleep)(fn)


def _backoff(fn: AsyncWork) -> AsyncWork:
    return backoff.on_exception(backoff.constant, ConnectionError, interval=WAIT, jitter=None, max_tries=5, logger=None)(fn)


def _stamina(fn: AsyncWork) -> AsyncWork:
    return stamina.retry(on=ConnectionError, attempts=5, wait_initial=WAIT, wait_max=WAIT, wait_jitter=0)(fn)


RETRIES: dict[str, tuple[Callable[[AsyncWork], AsyncWork], type[ResilienceInstrumentor]]] = {
    "tenacity": (_tenacity, TenacityInstrumentor),
    "backoff": (_backoff, BackoffInstrumentor),
    "stamina": (_stamina, StaminaInstrumentor),
}
RETRY_GROUPS = [f"{library} async {scenario}" for library in RETRIES for scenario in FAILURES]


def retried(group: str) -> Callable[[], Any]:
    library, _, scenario = group.split()
    return driven(RETRIES[library][0](make_async_work(FAILURES[scenario])))


def hand_built_retry(group: str, sdk: Sdk) -> Callable[[], Any]:
    """The library alone, awaiting an attempt that runs the work inside `RetryFloor`'s spans, as the sync floor."""
    library, _, scenario = group.split()
    retry, work = RETRIES[library][0], make_async_work(FAILURES[scenario])
    floor = RetryFloor(sdk, name=f"{__name__}.make_async_work.<locals>.fetch_user",
                       qualname="make_async_work.<locals>.fetch_user", wait=WAIT)

    async def call() -> str:
        counter = {"attempt": 0}
        with floor.operation() as op:

            async def attempt() -> str:
                counter["attempt"] += 1
                with floor.attempt(counter["attempt"]) as span:
                    try:
                        return await work()
                    except ConnectionError as exc:
                        floor.failed(span, exc)
                        raise

            result = await retry(attempt)()
            operation = floor.succeeded(op, counter["attempt"])
        floor.record(counter["attempt"], operation)
        return result

    return driven(call)


@contextmanager
def quiet() -> Iterator[None]:
    """No sleeping (tenacity's is given; backoff's and stamina's async sleeps are no-ops) and none of stamina's own
    hooks."""
    saved = backoff._async.asyncio, stamina._core._smart_sleep
    backoff._async.asyncio = SimpleNamespace(sleep=_no_sleep, iscoroutinefunction=asyncio.iscoroutinefunction)  # type: ignore[assignment]
    stamina._core._smart_sleep = _no_sleep  # type: ignore[assignment]
    set_on_retry_hooks([])
    try:
        yield
    finally:
        set_on_retry_hooks(None)
        backoff._async.asyncio, stamina._core._smart_sleep = saved  # type: ignore[assignment]


# --- breakers --------------------------------------------------------------------------------------------------------


async def ok() -> str:
    return "ok"


async def fail() -> None:
    raise ConnectionError("down")


@dataclass
class AsyncBreaker:
    """One breaker in one state: `call()` awaits one guarded call and returns its result, or the refusal error.
    `sync`: the same library's sync scenario in the same state, whose telemetry (state, refusal, failure count) the
    async call gets too, so the two share their floor."""

    call: AsyncWork
    sync: bench_breakers.Scenario


def _circuitbreaker(state: str) -> AsyncBreaker:
    breaker = circuitbreaker.CircuitBreaker(failure_threshold=1, recovery_timeout=3600, name=NAME)
    guarded = breaker(ok)
    if state == "open":
        driven(lambda: _swallow(breaker(fail)()))()

    async def call() -> Any:
        try:
            return await guarded()
        except circuitbreaker.CircuitBreakerError as exc:
            return exc

    return AsyncBreaker(call, bench_breakers.LIBRARIES["circuitbreaker"][0](state))


def _aiobreaker(state: str) -> AsyncBreaker:
    breaker = aiobreaker.CircuitBreaker(fail_max=1, timeout_duration=timedelta(hours=1), name=NAME)
    if state == "open":
        breaker.open()

    async def call() -> Any:
        try:
            return await breaker.call_async(ok)
        except aiobreaker.CircuitBreakerError as exc:
            return exc

    return AsyncBreaker(call, bench_breakers.LIBRARIES["aiobreaker"][0](state))


def _purgatory(state: str) -> AsyncBreaker:
    factory = AsyncCircuitBreakerFactory(default_threshold=1, default_ttl=3600)

    async def guarded(work: AsyncWork) -> Any:
        async with await factory.get_breaker(NAME):
            return await work()

    if state == "open":
        driven(lambda: _swallow(guarded(fail)))()

    async def call() -> Any:
        try:
            return await guarded(ok)
        except OpenedState as exc:
            exc.__traceback__ = None  # one object raised again and again: see `bench_breakers._purgatory`
            return exc

    return AsyncBreaker(call, bench_breakers.LIBRARIES["purgatory"][0](state))


async def _swallow(failing: Awaitable[Any]) -> None:
    """Await a call that fails (to open a breaker)."""
    try:
        await failing
    except ConnectionError:
        pass


BREAKERS: dict[str, tuple[Callable[[str], AsyncBreaker], type[ResilienceInstrumentor]]] = {
    "circuitbreaker": (_circuitbreaker, CircuitBreakerInstrumentor),
    "aiobreaker": (_aiobreaker, AioBreakerInstrumentor),
    "purgatory": (_purgatory, PurgatoryInstrumentor),
}
BREAKER_GROUPS = [f"{library} async {state}" for library in BREAKERS for state in ("closed", "open")]


def breaker_call(group: str) -> Callable[[], Any]:
    library, _, state = group.split()
    return driven(BREAKERS[library][0](state).call)


def hand_built_breaker(group: str, sdk: Sdk) -> Callable[[], Any]:
    """The library alone, the awaited call inside `BreakerFloor`'s span and counter point, as the sync floor."""
    library, _, state = group.split()
    bench = BREAKERS[library][0](state)
    floor = BreakerFloor(sdk, bench.sync)
    guarded = bench.call

    async def call() -> Any:
        with floor.span() as span:
            result = await guarded()
            outcome = floor.ended(span, result)
        floor.count(outcome)
        return result

    return driven(call)


# --- the benchmarks --------------------------------------------------------------------------------------------------

GROUPS = RETRY_GROUPS + BREAKER_GROUPS


def instrumentor_of(group: str) -> type[ResilienceInstrumentor]:
    library = group.split()[0]
    return RETRIES[library][1] if group in RETRY_GROUPS else BREAKERS[library][1]


def bare(group: str) -> Callable[[], Any]:
    """The call to time, made after instrumenting (as an app decorating at import would)."""
    return retried(group) if group in RETRY_GROUPS else breaker_call(group)


def hand_built(group: str, sdk: Sdk) -> Callable[[], Any]:
    return hand_built_retry(group, sdk) if group in RETRY_GROUPS else hand_built_breaker(group, sdk)


@pytest.fixture(autouse=True)
def quiet_libraries() -> Iterator[None]:
    with quiet():
        yield


instrumented, instrumented_no_sdk = instrumented_fixtures(
    lambda request: instrumentor_of(request.node.callspec.params["group"])()
)


@pytest.mark.parametrize("group", GROUPS)
def test_bare(benchmark: Any, group: str) -> None:
    variant(benchmark, group, "bare")
    benchmark(bare(group))


@pytest.mark.parametrize("group", GROUPS)
def test_no_sdk(benchmark: Any, group: str, instrumented_no_sdk: None) -> None:
    variant(benchmark, group, "no_sdk")
    benchmark(bare(group))


@pytest.mark.parametrize("group", GROUPS)
def test_instrumented(benchmark: Any, group: str, instrumented: Sdk) -> None:
    variant(benchmark, group, "instrumented", instrumented)
    benchmark(bare(group))


@pytest.mark.parametrize("group", GROUPS)
def test_hand_built(benchmark: Any, group: str, sdk: Sdk) -> None:
    """The bare library, with the same spans and metric points made by hand."""
    variant(benchmark, group, "hand_built", sdk)
    benchmark(hand_built(group, sdk))
