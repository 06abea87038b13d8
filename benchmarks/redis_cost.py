"""What the redis instrumentation adds to a command that succeeds at its first attempt (the hot path: no span of ours),
with no SDK and with one, alone and beside contrib's redis instrumentation.

A real ``redis-server`` on a loopback port (`tests.support.redis_server`); the command is ``GET`` on one pooled connection.
A round trip is tens of µs and moves by more than what we add, so the variants are measured alternately, round after
round in one process, each keeping its fastest round (interference only ever adds time), and the Python instructions
each variant executes beyond its baseline are counted too (`benchmarks.opcodes.count`: the same on every run).

    python -m benchmarks.redis_cost       # prints the table `benchmarks.report` puts in docs/performance.md
"""

from __future__ import annotations

import timeit
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import redis
from opentelemetry.instrumentation.redis import RedisInstrumentor

from benchmarks.conftest import Sdk, sdk_for_benchmarks
from benchmarks.opcodes import count
from otel_resilience.instrumentation.redis import RedisRetryInstrumentor
from tests.support.redis_server import redis_server_or_skip

ROUNDS = 9
REPEATS = 3
NUMBER = 300
VARIANTS = {
    # variant: (ours, ours with the SDK, contrib, the baseline it is compared with)
    "bare": (False, False, False, None),
    "no SDK": (True, False, False, "bare"),
    "SDK, first-try success": (True, True, False, "bare"),
    "contrib": (False, False, True, None),
    "contrib + ours, first-try success": (True, True, True, "contrib"),
}


@contextmanager
def variant(name: str, sdk: Sdk) -> Iterator[None]:
    ours, with_sdk, contrib, _ = VARIANTS[name]
    with ExitStack() as stack:
        if contrib:
            RedisInstrumentor().instrument(**sdk.kwargs())
            stack.callback(RedisInstrumentor().uninstrument)
        if ours:
            RedisRetryInstrumentor().instrument(**(sdk.kwargs() if with_sdk else {}))
            stack.callback(RedisRetryInstrumentor().uninstrument)
        yield


def measure() -> dict[str, tuple[float, int]]:
    """variant -> (seconds per command, fastest round; Python instructions per command)."""
    server = redis_server_or_skip()
    try:
        client = redis.Redis(port=server.port)
        client.set("user:1", "ada")
        command: Callable[[], Any] = lambda: client.get("user:1")  # noqa: E731
        fastest = {name: float("inf") for name in VARIANTS}
        instructions: dict[str, int] = {}
        with sdk_for_benchmarks() as sdk:
            for _ in range(ROUNDS):
                for name in VARIANTS:
                    with variant(name, sdk):
                        seconds = min(timeit.repeat(command, number=NUMBER, repeat=REPEATS)) / NUMBER
                    fastest[name] = min(fastest[name], seconds)
            for name in VARIANTS:
                with variant(name, sdk):
                    instructions[name] = sum(count(command).values())
        return {name: (fastest[name], instructions[name]) for name in VARIANTS}
    finally:
        server.close()


def render(results: dict[str, tuple[float, int]]) -> list[str]:
    lines = [
        "",
        "**redis, a command that succeeds at its first attempt** (`benchmarks/redis_cost.py`: `GET` against a local",
        f"redis-server; the variants alternated, {ROUNDS} rounds in one process, each variant's fastest round; no span",
        "of ours is made on this path):",
        "",
        "| variant | per command | added to its baseline | Python instructions | instructions added |",
        "|---|---|---|---|---|",
    ]
    for name, (seconds, instructions) in results.items():
        baseline = VARIANTS[name][3]
        added = added_instructions = "-"
        if baseline is not None:
            added = f"{(seconds - results[baseline][0]) * 1e6:+.2f} µs (vs {baseline})"
            added_instructions = f"{instructions - results[baseline][1]:+d}"
        lines.append(f"| {name} | {seconds * 1e6:.1f} µs | {added} | {instructions} | {added_instructions} |")
    return lines


if __name__ == "__main__":
    print("\n".join(render(measure())))
