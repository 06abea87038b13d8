"""tenacity: a call succeeding first time, and one failing twice then succeeding (tenacity's sleep a no-op)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import tenacity

from benchmarks.conftest import Sdk, hand_built_retry, instrumented_fixtures, make_work, variant
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor

FAILURES = {"first_try": 0, "fail_twice": 2}

PRODUCTION_SETUPS_TOO = True  # instrumented and hand_built also run sampled out and without a metrics SDK


def _no_sleep(_: float) -> None:
    """tenacity's sleep replaced: the benchmark measures work, not waiting."""


def decorated(work: Callable[[], str]) -> Callable[[], str]:
    return tenacity.retry(stop=tenacity.stop_after_attempt(5), wait=tenacity.wait_fixed(0.1), sleep=_no_sleep)(work)


instrumented, instrumented_no_sdk = instrumented_fixtures(lambda _request: TenacityInstrumentor())


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
    variant(benchmark, f"tenacity {scenario}", "instrumented", instrumented)
    assert benchmark(decorated(make_work(FAILURES[scenario]))) == "user"


@pytest.mark.parametrize("scenario", FAILURES)
def test_hand_built(benchmark: Any, scenario: str, sdk: Sdk) -> None:
    """Plain tenacity, with the same spans (names, attributes, events, status) and metric points made by hand."""
    variant(benchmark, f"tenacity {scenario}", "hand_built", sdk)
    assert benchmark(hand_built(scenario, sdk)) == "user"


def hand_built(scenario: str, sdk: Sdk) -> Callable[[], str]:
    return hand_built_retry(
        sdk, decorated, make_work(FAILURES[scenario]), name=f"{__name__}.fetch_user", qualname="fetch_user", wait=0.1
    )
