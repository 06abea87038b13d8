"""The production set-ups (`benchmarks.conftest.PRODUCTION_SETUPS`), instrumented against the same telemetry built by
hand, alternated round after round in one process, and counted in Python instructions.

Production services mostly sample (``ParentBased(TraceIdRatioBased(0.01))``: 99% of requests are not recorded) and many
run no metrics SDK. pytest-benchmark (`benchmarks.report`'s main tables) measures each variant a minute apart; here, as
in `benchmarks.no_sdk`, each round times the hand-built call, instruments, times the instrumented call and
uninstruments, so both see the same neighbours; each variant keeps its fastest round (interference only ever adds
time), and the rounds' ratios are kept to show their spread. The Python instructions each variant executes per call
(`benchmarks.opcodes.count`, the library's own included) do not vary between runs: the deterministic companion.

    python -m benchmarks.production       # prints the tables `benchmarks.report` puts in docs/performance.md
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from benchmarks import verdict
from benchmarks.conftest import PRODUCTION_SETUPS, instrumenting, sdk_for_benchmarks
from benchmarks.no_sdk import Scenario, per_call, scenarios
from benchmarks.opcodes import count

TARGET = 1.10  # instrumented ÷ hand-built, in every production set-up, first-try and fail-twice alike
ROUNDS = 9
SECONDS_PER_REPEAT = 0.02


@dataclass
class Result:
    hand_built: float  # seconds per call, fastest round
    instrumented: float
    ratios: list[float]  # instrumented ÷ hand-built, per round
    hand_built_instructions: int  # Python instructions per call
    instrumented_instructions: int

    @property
    def ratio(self) -> float:
        return self.instrumented / self.hand_built


def measure_one(scenario: Scenario, setup: str, rounds: int = ROUNDS) -> Result:
    hand: list[float] = []
    ours: list[float] = []
    with scenario.context(), sdk_for_benchmarks(setup) as sdk:
        number = max(1, int(SECONDS_PER_REPEAT / per_call(scenario.hand_built(sdk), 100)))
        for _ in range(rounds):
            hand.append(per_call(scenario.hand_built(sdk), number))
            with instrumenting(scenario.instrumentor(), **sdk.kwargs()):
                ours.append(per_call(scenario.make(), number))
        hand_work = sum(count(scenario.hand_built(sdk)).values())
        with instrumenting(scenario.instrumentor(), **sdk.kwargs()):
            our_work = sum(count(scenario.make()).values())
    return Result(min(hand), min(ours), [o / h for h, o in zip(hand, ours, strict=True)], hand_work, our_work)


def measure() -> dict[str, dict[str, Result]]:
    """scenario -> set-up -> result."""
    return {group: {setup: measure_one(scenario, setup) for setup in PRODUCTION_SETUPS} for group, scenario in scenarios().items()}


def _metric_points(setups: dict[str, Result], attribute: str) -> float:
    return getattr(setups["sampled_out_metrics"], attribute) - getattr(setups["sampled_out"], attribute)


def render(results: dict[str, dict[str, Result]]) -> list[str]:
    lines = [
        "",
        f"**Production set-ups, alternated** (`benchmarks/production.py`; target: instrumented at most {TARGET:.2f}× the",
        f"same telemetry built by hand, in every set-up): hand-built and instrumented measured alternately, {ROUNDS} rounds",
        "in one process; each variant's fastest round, and the median of the rounds' own ratios. *Python instructions*:",
        "executed per call, library included, instrumented ÷ hand-built (deterministic). Set-ups:",
        "",
        *(f"- `{setup}`: {meaning}" for setup, meaning in PRODUCTION_SETUPS.items()),
        "",
        "| scenario | set-up | hand-built | instrumented | vs hand-built, fastest rounds (target) | rounds' median ratio "
        "| Python instructions, hand-built → instrumented |",
        "|---|---|---|---|---|---|---|",
    ]
    for group, setups in results.items():
        for setup, r in setups.items():
            lines.append(
                f"| {group} | {setup} | {r.hand_built * 1e6:.2f} µs | {r.instrumented * 1e6:.2f} µs "
                f"| {r.ratio:.2f}× (≤ {TARGET:.2f}) {verdict(r.ratio, TARGET)} | {statistics.median(r.ratios):.2f}× "
                f"| {r.hand_built_instructions:,} → {r.instrumented_instructions:,} "
                f"({r.instrumented_instructions / r.hand_built_instructions:.2f}×) |"
            )
    lines += [
        "",
        "**Metric points of a sampled-out call** (metrics are never sampled: every call still records its points):",
        "`sampled_out_metrics` − `sampled_out` above, per call, in time (fastest rounds) and Python instructions.",
        "",
        "| scenario | by hand | instrumented | Python instructions, by hand | Python instructions, instrumented |",
        "|---|---|---|---|---|",
    ]
    for group, setups in results.items():
        lines.append(
            f"| {group} | {_metric_points(setups, 'hand_built') * 1e6:+.2f} µs "
            f"| {_metric_points(setups, 'instrumented') * 1e6:+.2f} µs "
            f"| {_metric_points(setups, 'hand_built_instructions'):+,.0f} "
            f"| {_metric_points(setups, 'instrumented_instructions'):+,.0f} |"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(render(measure())))
