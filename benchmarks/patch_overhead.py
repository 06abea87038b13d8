"""What one patched method costs per call while its wrapper is switched off (no SDK): wrapt's ``FunctionWrapper``
against `otel_resilience.patching`'s plain function, both with a ``ContextVar.get`` as the check. This is the row
behind the choice of plain functions in `otel_resilience.patching`.

    python -m benchmarks.patch_overhead
"""

from __future__ import annotations

import contextvars
import timeit
from collections.abc import Callable
from typing import Any

import wrapt

from otel_resilience.patching import Patches

_OFF: contextvars.ContextVar[object] = contextvars.ContextVar("patch_overhead_off", default=None)
CALLS = 1_000_000
REPEATS = 5


def _wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return wrapped(*args, **kwargs)


class Bare:
    def method(self, x: int) -> int:
        return x


class WithWrapt(Bare):
    method = wrapt.FunctionWrapper(Bare.method, _wrapper, enabled=_OFF.get)


class WithPatch(Bare):
    method = Bare.method


def _per_call_us(obj: Bare) -> float:
    return min(timeit.repeat(lambda: obj.method(1), number=CALLS, repeat=REPEATS)) / CALLS * 1e6


def measure() -> dict[str, float]:
    patches = Patches()
    patches.wrap(WithPatch, "method", _wrapper, enabled=_OFF.get)
    try:
        return {
            "bare method": _per_call_us(Bare()),
            "wrapt FunctionWrapper, switched off": _per_call_us(WithWrapt()),
            "otel_resilience.patching, switched off": _per_call_us(WithPatch()),
        }
    finally:
        patches.restore()


if __name__ == "__main__":
    for label, microseconds in measure().items():
        print(f"| {label} | {microseconds:.2f} µs |")
