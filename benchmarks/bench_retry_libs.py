"""backoff and stamina: a call succeeding first time, and one failing twice then succeeding (the libraries' sleeps are
no-ops, their own log handlers and hooks switched off in every variant).

Each scenario runs in the four variants of `benchmarks.conftest` (bare, no_sdk, hand_built, instrumented), as for
tenacity. The hand-built variant runs the bare library with the same spans (names, attributes, events, status) and
metric points made by hand with the OpenTelemetry API: instrumented ÷ hand-built is what the instrumentation costs
beyond its telemetry; no_sdk - bare is what it costs an app with no SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import backoff
import backoff._sync
import pytest
import stamina
import tenacity.nap
from stamina.instrumentation import set_on_retry_hooks

from benchmarks.conftest import Sdk, hand_built_retry, instrumented_fixtures, make_work, variant
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.backoff import BackoffInstrumentor
from otel_resilience.instrumentation.stamina import StaminaInstrumentor

FAILURES = {"first_try": 0, "fail_twice": 2}
WAIT = 0.1
Retried = Callable[[Callable[[], str]], Callable[[], str]]

PRODUCTION_SETUPS_TOO = True  # instrumented and hand_built also run sampled out and without a metrics SDK


def _backoff(fn: Callable[[], str]) -> Callable[[], str]:
    return backoff.on_exception(backoff.constant, ConnectionError, interval=WAIT, jitter=None, max_tries=5, logger=None)(fn)


def _stamina(fn: Callable[[], str]) -> Callable[[], str]:
    return stamina.retry(on=ConnectionError, attempts=5, wait_initial=WAIT, wait_max=WAIT, wait_jitter=0)(fn)


LIBRARIES: dict[str, tuple[Retried, type[ResilienceInstrumentor]]] = {
    "backoff": (_backoff, BackoffInstrumentor),
    "stamina": (_stamina, StaminaInstrumentor),
}
GROUPS = [f"{library} {scenario}" for library in LIBRARIES for scenario in FAILURES]


def retried(group: str) -> Callable[[], str]:
    library, scenario = group.split()
    return LIBRARIES[library][0](make_work(FAILURES[scenario]))


@contextmanager
def quiet() -> Iterator[None]:
    """No sleeping (backoff's and tenacity's sleeps are no-ops) and none of stamina's own hooks."""
    no_sleep = SimpleNamespace(sleep=lambda seconds: None)
    saved = backoff._sync.time, tenacity.nap.time
    backoff._sync.time, tenacity.nap.time = no_sleep, no_sleep  # type: ignore[assignment]
    set_on_retry_hooks([])
    try:
        yield
    finally:
        set_on_retry_hooks(None)
        backoff._sync.time, tenacity.nap.time = saved


@pytest.fixture(autouse=True)
def quiet_libraries() -> Iterator[None]:
    with quiet():
        yield


def instrumentor(request: pytest.FixtureRequest) -> ResilienceInstrumentor:
    return LIBRARIES[request.node.callspec.params["group"].split()[0]][1]()


instrumented, instrumented_no_sdk = instrumented_fixtures(instrumentor)


@pytest.mark.parametrize("group", GROUPS)
def test_bare(benchmark: Any, group: str) -> None:
    variant(benchmark, group, "bare")
    assert benchmark(retried(group)) == "user"


@pytest.mark.parametrize("group", GROUPS)
def test_no_sdk(benchmark: Any, group: str, instrumented_no_sdk: None) -> None:
    variant(benchmark, group, "no_sdk")
    assert benchmark(retried(group)) == "user"


@pytest.mark.parametrize("group", GROUPS)
def test_instrumented(benchmark: Any, group: str, instrumented: Sdk) -> None:
    variant(benchmark, group, "instrumented", instrumented)
    assert benchmark(retried(group)) == "user"


@pytest.mark.parametrize("group", GROUPS)
def test_hand_built(benchmark: Any, group: str, sdk: Sdk) -> None:
    """The bare library, with the same operation and attempt spans and metric points made by hand."""
    variant(benchmark, group, "hand_built", sdk)
    assert benchmark(hand_built(group, sdk)) == "user"


def hand_built(group: str, sdk: Sdk) -> Callable[[], str]:
    library, scenario = group.split()
    return hand_built_retry(
        sdk, LIBRARIES[library][0], make_work(FAILURES[scenario]),
        name="benchmarks.conftest.make_work.<locals>.fetch_user", qualname="make_work.<locals>.fetch_user", wait=WAIT,
    )
