"""What instrumentation adds per call with no SDK configured, bare and instrumented measured alternately.

The budget (target: at most 0.5 µs per call) is smaller than what separates two medians of the same code measured a
minute apart on this machine, so `bench_*`'s ``no_sdk`` and ``bare`` variants, which pytest runs a minute apart, cannot
settle it. Here every scenario alternates the two, round after round, in one process: each round times the bare call,
instruments (no SDK: the global providers are unset), times the call again, uninstruments. A variant's figure is its
fastest round (interference only ever adds time: timeit's reason for its minimum); the rounds' differences are kept
too, to show how far they spread. For calls of tens of µs, 0.5 µs is about 1% and at the edge of even this; the
Python instructions the instrumented call executes beyond the bare one (`benchmarks.opcodes.count`) are counted too:
that number does not vary, and it shows which scenarios do the same work.

    python -m benchmarks.no_sdk           # prints the table `benchmarks.report` puts in docs/performance.md
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from benchmarks import bench_async, bench_breakers, bench_pybreaker, bench_retry_libs, bench_tenacity, verdict
from benchmarks.conftest import Sdk, instrumenting, make_work
from benchmarks.opcodes import count
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.pybreaker import PyBreakerInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor

NO_SDK_BUDGET_US = 0.5
ROUNDS = 11
REPEATS = 3
SECONDS_PER_REPEAT = 0.02


@dataclass
class Scenario:
    """`make()` builds the call to time (after instrumenting, as an app decorating at import would) inside
    `context()`; `instrumentor()` is the library's; ``hand_built(sdk)`` the bare call with the same telemetry made by
    hand (`benchmarks.production`)."""

    make: Callable[[], Callable[[], Any]]
    instrumentor: Callable[[], ResilienceInstrumentor]
    hand_built: Callable[[Sdk], Callable[[], Any]]
    context: Callable[[], AbstractContextManager[Any]] = nullcontext


def scenarios() -> dict[str, Scenario]:
    scenarios = {
        f"tenacity {name}": Scenario(
            lambda failures=failures: bench_tenacity.decorated(make_work(failures)),
            TenacityInstrumentor,
            lambda sdk, name=name: bench_tenacity.hand_built(name, sdk),
        )
        for name, failures in bench_tenacity.FAILURES.items()
    }
    for group in bench_retry_libs.GROUPS:
        scenarios[group] = Scenario(
            lambda group=group: bench_retry_libs.retried(group),
            bench_retry_libs.LIBRARIES[group.split()[0]][1],
            lambda sdk, group=group: bench_retry_libs.hand_built(group, sdk),
            bench_retry_libs.quiet,
        )
    for state in bench_pybreaker.STATES:
        scenarios[f"pybreaker {state}"] = Scenario(
            lambda state=state: bench_pybreaker.calling(bench_pybreaker.breaker_in(state)),
            PyBreakerInstrumentor,
            lambda sdk, state=state: bench_pybreaker.hand_built(state, sdk),
        )
    for group in bench_breakers.SCENARIOS:
        scenarios[group] = Scenario(
            lambda group=group: bench_breakers.scenario(group).call,
            bench_breakers.LIBRARIES[group.split()[0]][1],
            lambda sdk, group=group: bench_breakers.hand_built(group, sdk),
        )
    for group in bench_async.GROUPS:
        scenarios[group] = Scenario(
            lambda group=group: bench_async.bare(group),
            bench_async.instrumentor_of(group),
            lambda sdk, group=group: bench_async.hand_built(group, sdk),
            bench_async.quiet,
        )
    return dict(sorted(scenarios.items()))


def per_call(call: Callable[[], Any], number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=REPEATS)) / number


@dataclass
class Result:
    bare: float  # seconds per call, fastest round
    no_sdk: float
    differences: list[float]  # no_sdk - bare, per round
    instructions: int  # Python instructions the no-SDK call executes beyond the bare one

    @property
    def added_us(self) -> float:
        return (self.no_sdk - self.bare) * 1e6


def measure_one(scenario: Scenario, rounds: int = ROUNDS) -> Result:
    bare: list[float] = []
    no_sdk: list[float] = []
    with scenario.context():
        call = scenario.make()
        number = max(1, int(SECONDS_PER_REPEAT / per_call(call, 100)))
        for _ in range(rounds):
            bare.append(per_call(scenario.make(), number))
            with instrumenting(scenario.instrumentor()):  # no providers, none set globally
                no_sdk.append(per_call(scenario.make(), number))
        bare_work = sum(count(scenario.make()).values())
        with instrumenting(scenario.instrumentor()):  # no providers, none set globally
            added_work = sum(count(scenario.make()).values()) - bare_work
    return Result(min(bare), min(no_sdk), [n - b for b, n in zip(bare, no_sdk, strict=True)], added_work)



def measure() -> dict[str, Result]:
    return {group: measure_one(scenario) for group, scenario in scenarios().items()}


def render(results: dict[str, Result]) -> list[str]:
    lines = [
        "",
        f"**No SDK** (target: at most {NO_SDK_BUDGET_US} µs added per call; `benchmarks/no_sdk.py`): bare and",
        f"instrumented with no SDK measured alternately, {ROUNDS} rounds in one process; each variant's fastest round.",
        "",
        "| scenario | bare | added, fastest rounds (target) | added, rounds' median difference "
        "| Python instructions added |",
        "|---|---|---|---|---|",
    ]
    for group, result in results.items():
        added = result.added_us
        outcome = "not resolved (below bare)" if added < 0 else verdict(added, NO_SDK_BUDGET_US)
        median = statistics.median(result.differences) * 1e6
        lines.append(
            f"| {group} | {result.bare * 1e6:.2f} µs | {added:+.2f} µs (≤ {NO_SDK_BUDGET_US}) {outcome} "
            f"| {median:+.2f} µs | {result.instructions} |"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(render(measure())))
