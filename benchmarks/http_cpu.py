"""CPU time per HTTP request, with its uncertainty: the HTTP target (one attempt span of ours at most 0.6× contrib's
per-request cost) is stated in CPU, and a loopback request's CPU time moves with the machine's load by more than the
differences measured here.

The variants of `bench_http` (bare; contrib's requests instrumentation; ours; for the GET, the hand-built telemetry)
are measured in rounds. A round runs every variant, in a shuffled order, for a block of requests, instrumenting before
and uninstrumenting after, so that all variants share the same stretches of the machine's load. Every request's CPU
time (``time.process_time``, client side; the server is another process) is kept. A variant's figure is a low
quantile of all its requests (the least disturbed ones, read more steadily than the single fastest); the ratio
(variant − bare) ÷ attempts ÷ (contrib − bare) comes with a 95% interval from resampling whole rounds (bootstrap).
The verdict is "met" when the whole interval is under the target, "MISSED" when it is all above, otherwise
"not settled". Where the machine has two CPUs, the client and the server each get one of their own (`_own_cpus`).
The rounds come from several client processes, one after the other, pooled (`measure`). Nothing here asserts on time.

    python -m benchmarks.http_cpu        # about a minute and a half; prints the table `benchmarks.report` puts in
                                         # docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry.instrumentation.requests import RequestsInstrumentor

from benchmarks.bench_http import ATTEMPTS, SCENARIOS, getter, hand_built, serving
from benchmarks.conftest import Sdk, instrumenting, sdk_for_benchmarks
from benchmarks.opcodes import HTTP_ATTEMPT_VS_CONTRIB_TARGET
from otel_resilience.instrumentation.urllib3 import Urllib3RetryInstrumentor

PROCESSES = 4
ROUNDS = 40  # per process
REQUESTS = 50  # per variant and round
QUANTILE = 0.1
RESAMPLES = 1000

Rounds = list[dict[str, list[float]]]  # per round: variant -> CPU seconds of each request


Variant = tuple[Callable[[], AbstractContextManager[Any]], Callable[[], int]]
"""What to have on while a variant runs, and one request."""


def variants_of(sdk: Sdk, base_url: str, scenario: str) -> dict[str, Variant]:
    """variant -> (what to have on while it runs, one request). One session serves all but the hand-built variant:
    the patches are on classes, so the same keep-alive connection is measured under each."""
    call = getter(base_url, scenario)
    variants: dict[str, Variant] = {
        "bare": (nullcontext, call),
        "contrib": (lambda: instrumenting(RequestsInstrumentor(), **sdk.kwargs()), call),
        "ours": (lambda: instrumenting(Urllib3RetryInstrumentor(), **sdk.kwargs()), call),
    }
    if scenario == "keep-alive GET":
        variants["hand_built"] = (nullcontext, hand_built(sdk.tracer_provider.get_tracer("hand"), base_url))
    return variants


@contextmanager
def _own_cpus() -> Iterator[tuple[int | None, int | None]]:
    """(the client's CPU, the server's) when the machine has two to give, else (None, None). Pinned apart, the client
    is not descheduled for the server's turn, nor the server for the client's: on this shared machine that took the
    GET's ratio from readings between 0.53× and 0.62× run to run to within a few hundredths."""
    if not hasattr(os, "sched_getaffinity"):
        yield None, None
        return
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        yield None, None
        return
    os.sched_setaffinity(0, {allowed[0]})
    try:
        yield allowed[0], allowed[1]
    finally:
        os.sched_setaffinity(0, allowed)


def measure_rounds(rounds: int = ROUNDS, requests: int = REQUESTS, seed: int = 0) -> dict[str, Rounds]:
    """scenario -> its rounds."""
    shuffle = random.Random(seed).shuffle
    results: dict[str, Rounds] = {}
    with _own_cpus() as (_client, server_cpu), serving(server_cpu) as base_url, sdk_for_benchmarks() as sdk:
        for scenario in SCENARIOS:
            variants = variants_of(sdk, base_url, scenario)
            order = list(variants)
            measured: Rounds = []
            results[scenario] = measured
            for _ in range(rounds):
                shuffle(order)
                this_round: dict[str, list[float]] = {}
                for name in order:
                    switched_on, call = variants[name]
                    with switched_on():
                        call()  # the first request after a switch pays for it (caches, specialisation)
                        times = this_round[name] = []
                        for _ in range(requests):
                            start = time.process_time()
                            call()
                            times.append(time.process_time() - start)
                measured.append(this_round)
    return results


def measure(processes: int = PROCESSES, rounds: int = ROUNDS) -> dict[str, Rounds]:
    """scenario -> the rounds of `processes` client processes, run one after the other, pooled. One process reads
    the same ratio a few hundredths away from the next (its hash seed and where its objects land change how its code
    meets the caches): pooling several, each with a hash seed of its own, measures the code rather than one layout."""
    pooled: dict[str, Rounds] = {}
    for n in range(processes):
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.http_cpu", "--child", str(rounds), str(n)],
            env={**os.environ, "PYTHONHASHSEED": str(n + 1)},
            capture_output=True,
            text=True,
            check=True,
        )
        for scenario, measured in json.loads(child.stdout).items():
            pooled.setdefault(scenario, []).extend(measured)
    return pooled


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def figures(rounds: Rounds, q: float = QUANTILE) -> dict[str, float]:
    """variant -> its quantile-`q` CPU seconds per request over all the rounds."""
    return {name: _quantile([t for r in rounds for t in r[name]], q) for name in rounds[0]}


def ratio(rounds: Rounds, name: str, attempts: int) -> float:
    f = figures(rounds)
    return (f[name] - f["bare"]) / attempts / (f["contrib"] - f["bare"])


def interval(rounds: Rounds, name: str, attempts: int, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """The 95% bootstrap interval of `ratio`: the rounds resampled with replacement."""
    pick = random.Random(seed).choice
    ratios = sorted(ratio([pick(rounds) for _ in rounds], name, attempts) for _ in range(resamples))
    return ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


def settled(low: float, high: float, target: float) -> str:
    if high <= target:
        return "met"
    return "MISSED" if low > target else "not settled"


def render(results: dict[str, Rounds]) -> list[str]:
    lines = [
        "",
        f"**HTTP, CPU time per request, alternated** (`benchmarks/http_cpu.py`: {PROCESSES} client processes × {ROUNDS} "
        f"rounds of {REQUESTS} requests per variant, pooled; variants shuffled in each round, client and server pinned "
        "to CPUs of their own; each figure the "
        f"{QUANTILE:.0%} quantile of all its requests; 95% interval by resampling the rounds). The verdict holds only "
        "if the whole interval is on one side.",
        "",
        "| HTTP scenario | attempts | bare | contrib, added | ours, added | per attempt vs contrib (target), 95% interval "
        "| hand-built vs contrib |",
        "|---|---|---|---|---|---|---|",
    ]
    target = HTTP_ATTEMPT_VS_CONTRIB_TARGET
    for scenario, rounds in results.items():
        attempts = ATTEMPTS[scenario]
        f = figures(rounds)
        low, high = interval(rounds, "ours", attempts)
        hand = ""
        if "hand_built" in f:
            hand_low, hand_high = interval(rounds, "hand_built", 1)
            hand = f"{ratio(rounds, 'hand_built', 1):.2f}× ({hand_low:.2f}–{hand_high:.2f})"
        lines.append(
            f"| http requests {scenario} | {attempts} | {f['bare'] * 1e6:.1f} µs | {(f['contrib'] - f['bare']) * 1e6:+.1f} µs "
            f"| {(f['ours'] - f['bare']) * 1e6:+.1f} µs | {ratio(rounds, 'ours', attempts):.2f}× ({low:.2f}–{high:.2f}; "
            f"≤ {target}) {settled(low, high, target)} | {hand} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=2, type=int, metavar=("ROUNDS", "SEED"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        rounds, seed = options.child
        print(json.dumps(measure_rounds(rounds, seed=seed)))
    else:
        print("\n".join(render(measure())))


if __name__ == "__main__":
    main()
