"""Python work per HTTP request, counted in bytecode instructions executed: a deterministic companion to the CPU-time
figures of `bench_http`, which the machine's noise moves by more than the differences they are after.

Each variant of `bench_http` (bare, contrib's requests instrumentation, the hand-built telemetry, ours) makes the same
requests against the same scripted server, with the interpreter's opcode tracing on (``f_trace_opcodes``), and the
instructions are counted by where their code lives: ours, the OpenTelemetry API, the SDK, everything else. It counts
Python work only (not what C code, the kernel or the server did) and tracing makes the run slow, never the count.

    python -m benchmarks.opcodes          # prints the table `benchmarks.report` puts in docs/performance.md
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from types import FrameType
from typing import Any

from opentelemetry.instrumentation.requests import RequestsInstrumentor

from benchmarks import verdict
from benchmarks.bench_http import ATTEMPTS, SCENARIOS, getter, hand_built, serving
from benchmarks.conftest import instrumenting, sdk_for_benchmarks
from otel_resilience.instrumentation.urllib3 import Urllib3RetryInstrumentor

REQUESTS = 30
HTTP_ATTEMPT_VS_CONTRIB_TARGET = 0.6  # the HTTP target: one attempt span of ours against contrib's per-request cost
PLACES = {"otel_resilience": "ours", "opentelemetry/sdk": "SDK", "opentelemetry": "OpenTelemetry API"}


def _place(filename: str) -> str:
    return next((place for marker, place in PLACES.items() if marker in filename), "other")


def count(call: Callable[[], Any], requests: int = REQUESTS) -> Counter[str]:
    """Instructions executed per call of `call`, by place (averaged over `requests` calls, after one warm-up)."""
    call()
    counts: Counter[str] = Counter()

    def local(frame: FrameType, event: str, _arg: Any) -> Any:
        if event == "opcode":
            counts[_place(frame.f_code.co_filename)] += 1
        return local

    def start(frame: FrameType, _event: str, _arg: Any) -> Any:
        frame.f_trace_opcodes = True
        return local

    sys.settrace(start)
    try:
        for _ in range(requests):
            call()
    finally:
        sys.settrace(None)
    return Counter({place: n // requests for place, n in counts.items()})


def measure() -> dict[str, dict[str, Counter[str]]]:
    """scenario -> variant -> instructions per request by place."""
    results: dict[str, dict[str, Counter[str]]] = {}
    with serving() as base_url, sdk_for_benchmarks() as sdk:
        for scenario in SCENARIOS:
            variants = results[scenario] = {"bare": count(getter(base_url, scenario))}
            with instrumenting(RequestsInstrumentor(), **sdk.kwargs()):
                variants["contrib"] = count(getter(base_url, scenario))
            with instrumenting(Urllib3RetryInstrumentor(), **sdk.kwargs()):
                variants["ours"] = count(getter(base_url, scenario))
            if scenario == "keep-alive GET":
                variants["hand_built"] = count(hand_built(sdk.tracer_provider.get_tracer("hand"), base_url))
    return results


def render(results: dict[str, dict[str, Counter[str]]]) -> list[str]:
    lines = [
        "",
        "**HTTP, Python work per request** (`benchmarks/opcodes.py`: bytecode instructions executed, counted by where",
        "their code lives; deterministic, so these ratios do not move between runs). *added* is a variant minus bare.",
        "",
        "| HTTP scenario | attempts | bare | contrib, added | hand-built, added | ours, added (ours' own code) "
        "| per attempt vs contrib (target) | hand-built vs contrib |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario, variants in results.items():
        bare = sum(variants["bare"].values())
        added = {name: sum(counts.values()) - bare for name, counts in variants.items()}
        contrib, ours = added["contrib"], added["ours"]
        per_attempt = ours / ATTEMPTS[scenario] / contrib
        hand = f"{added['hand_built']:,}" if "hand_built" in added else ""
        floor = f"{added['hand_built'] / contrib:.2f}×" if "hand_built" in added else ""
        lines.append(
            f"| http requests {scenario} | {ATTEMPTS[scenario]} | {bare:,} | {contrib:,} | {hand} "
            f"| {ours:,} ({variants['ours']['ours']:,}) | {per_attempt:.2f}× (≤ {HTTP_ATTEMPT_VS_CONTRIB_TARGET}) {verdict(per_attempt, HTTP_ATTEMPT_VS_CONTRIB_TARGET)} | {floor} |"
        )
    return lines


if __name__ == "__main__":
    print("\n".join(render(measure())))
