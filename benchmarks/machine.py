"""Machine instructions per HTTP request, counted by valgrind's cachegrind: all the client's CPU work (Python, C
extensions and libc; not the kernel), the same in every run, which CPU time on a shared machine is not. Cachegrind also
simulates the caches and the branch predictor, so besides instructions this gives a modelled cycle count:

    cycles ≈ instructions + 10 × first-level cache misses + 100 × last-level misses + 20 × mispredicted branches

Each variant of `bench_http` runs in a process of its own under cachegrind, twice: once making `FEW` requests and once
`MANY`, after the same set-up. The difference, divided by ``MANY - FEW``, is one request: start-up, imports and set-up
cancel out. The scripted server runs in another process, not under valgrind. ``PYTHONHASHSEED`` is fixed, so that two
runs hash alike; what still varies is how the kernel splits the server's replies into reads (a few hundred
instructions per request).

    python -m benchmarks.machine          # a few minutes (valgrind runs Python ~50× slower); needs valgrind
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import verdict
from benchmarks.bench_http import ATTEMPTS, SCENARIOS, serving
from benchmarks.opcodes import HTTP_ATTEMPT_VS_CONTRIB_TARGET

FEW, MANY = 10, 210
VARIANTS = ("bare", "contrib", "ours", "hand_built")
Counts = dict[str, float]  # cachegrind event -> per request


def modelled_cycles(c: Counts) -> float:
    return (
        c["Ir"]
        + 10 * (c["I1mr"] + c["D1mr"] + c["D1mw"])
        + 100 * (c["ILmr"] + c["DLmr"] + c["DLmw"])
        + 20 * (c["Bcm"] + c["Bim"])
    )


def _requests(variant: str, scenario: str, count: int) -> None:
    """The child: `count` requests of `scenario` in `variant` (run under cachegrind by `_cachegrind`)."""
    from benchmarks.conftest import sdk_for_benchmarks
    from benchmarks.http_cpu import variants_of

    with serving() as base_url, sdk_for_benchmarks() as sdk:
        switched_on, call = variants_of(sdk, base_url, scenario)[variant]
        with switched_on():
            for _ in range(5 + count):  # 5 to warm up, in both runs
                call()


def _cachegrind(variant: str, scenario: str, count: int, out_dir: str) -> Counts:
    out = Path(out_dir) / f"{variant}.{scenario.replace(' ', '_')}.{count}"
    subprocess.run(
        [
            "valgrind", "--tool=cachegrind", "--cache-sim=yes", "--branch-sim=yes", f"--cachegrind-out-file={out}",
            sys.executable, "-m", "benchmarks.machine", "--child", variant, scenario, str(count),
        ],
        env={**os.environ, "PYTHONHASHSEED": "0"},
        capture_output=True,
        check=True,
    )
    events: list[str] = []
    for line in out.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("summary:"):
            return dict(zip(events, map(float, line.split()[1:]), strict=True))
    raise RuntimeError(f"no summary in {out}")


def measure() -> dict[str, dict[str, Counts]] | None:
    """scenario -> variant -> cachegrind events per request; None when valgrind is not installed."""
    if shutil.which("valgrind") is None:
        return None
    jobs = [
        (variant, scenario, count)
        for scenario in SCENARIOS
        for variant in VARIANTS
        if variant != "hand_built" or scenario == "keep-alive GET"
        for count in (FEW, MANY)
    ]
    with tempfile.TemporaryDirectory() as out_dir, ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        counted = dict(zip(jobs, pool.map(lambda job: _cachegrind(*job, out_dir), jobs), strict=True))
    results: dict[str, dict[str, Counts]] = {}
    for (variant, scenario, count), counts in counted.items():
        if count == MANY:
            few = counted[(variant, scenario, FEW)]
            results.setdefault(scenario, {})[variant] = {e: (counts[e] - few[e]) / (MANY - FEW) for e in counts}
    return results


def render(results: dict[str, dict[str, Counts]] | None) -> list[str]:
    lines = [
        "",
        "**HTTP, machine instructions per request** (`benchmarks/machine.py`: valgrind's cachegrind, the client's whole "
        "CPU work, deterministic; *cycles* modelled from its simulated cache and branch misses).",
        "",
    ]
    if results is None:
        return [*lines, "Not measured in this run: valgrind is not installed."]
    target = HTTP_ATTEMPT_VS_CONTRIB_TARGET
    lines += [
        "| HTTP scenario | attempts | bare | contrib, added | ours, added | per attempt vs contrib: instructions "
        "| per attempt vs contrib: modelled cycles (target) | hand-built vs contrib: instructions, cycles |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario, variants in results.items():
        attempts = ATTEMPTS[scenario]
        ir = {name: counts["Ir"] - variants["bare"]["Ir"] for name, counts in variants.items()}
        cycles = {name: modelled_cycles(counts) - modelled_cycles(variants["bare"]) for name, counts in variants.items()}
        per_attempt_ir = ir["ours"] / attempts / ir["contrib"]
        per_attempt_cycles = cycles["ours"] / attempts / cycles["contrib"]
        hand = ""
        if "hand_built" in variants:
            hand = f"{ir['hand_built'] / ir['contrib']:.2f}×, {cycles['hand_built'] / cycles['contrib']:.2f}×"
        lines.append(
            f"| http requests {scenario} | {attempts} | {variants['bare']['Ir']:,.0f} | {ir['contrib']:,.0f} "
            f"| {ir['ours']:,.0f} | {per_attempt_ir:.2f}× "
            f"| {per_attempt_cycles:.2f}× (≤ {target}) {verdict(per_attempt_cycles, target)} | {hand} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("VARIANT", "SCENARIO", "COUNT"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        variant, scenario, count = options.child
        _requests(variant, scenario, int(count))
    else:
        print("\n".join(render(measure())))


if __name__ == "__main__":
    main()
