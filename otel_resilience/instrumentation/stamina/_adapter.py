"""Translate stamina's retries into core retry events, through the tenacity loop stamina runs on.

Every stamina form iterates a ``_RetryContextIterator``, whose ``__iter__``/``__aiter__`` (looked up at call time)
start a tenacity loop. stamina claims that loop (core/claims.py), and a `TenacityAdapter` of our own records it under
stamina's scope and names: one operation, counted once in the retry depth, whether or not tenacity is instrumented
too. No hook is registered with stamina: its own instrumentation and the app's hooks stay as they are
(docs/retry-libraries.md).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Iterator
from typing import Any, Final

from stamina._core import _RetryContextIterator

from otel_resilience.core import Telemetry, never_raises
from otel_resilience.core.claims import OperationClaim, claim_operation, release_claim
from otel_resilience.core.naming import callable_names, caller_names
from otel_resilience.instrumentation._base import Patches
from otel_resilience.instrumentation.tenacity._adapter import TenacityAdapter

_SKIPPED_FRAMES: Final = ("stamina", "tenacity")
_OURS: Final = "otel_resilience"
_RETRIED_CALLABLE: Final = ("wrapped", "callable_")  # in stamina's decorator closures and its RetryingCallers


def _stamina_callable() -> Any:
    """The callable that stamina itself is retrying, when one of its own loops is starting (decorators, callers):
    read from the frame of that loop. None for a ``retry_context`` block the app wrote."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_OURS):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None or not frame.f_globals.get("__name__", "").startswith("stamina"):
        return None
    variables = frame.f_locals
    for name in _RETRIED_CALLABLE:
        if name in variables:
            return variables[name]
    return None


def _claimed_iteration(attempts: Iterator[Any], claim: OperationClaim) -> Generator[Any, None, None]:
    """stamina's attempts, unchanged, with the claim set while stamina starts tenacity's loop (its first step)."""
    token = claim_operation(claim)
    try:
        first = next(attempts)
    except StopIteration:
        return
    finally:
        release_claim(token)
    try:
        yield first
    except GeneratorExit:
        attempts.close()  # type: ignore[attr-defined]
        raise
    yield from attempts


class StaminaAdapter:
    """Holds the Telemetry for stamina, claims stamina's loops, and records them through its own tenacity hooks."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        # stamina retries on exceptions only: an attempt whose body completed ends the retry, successfully
        self.loops = TenacityAdapter(telemetry, claimant=self, clean_exit_is_final=True)

    def patch(self, patches: Patches) -> None:
        self.loops.patch(patches)
        recording = self.telemetry.recording
        patches.wrap(_RetryContextIterator, "__iter__", self._iter, enabled=recording)
        patches.wrap(_RetryContextIterator, "__aiter__", self._aiter, enabled=recording)

    @never_raises
    def _claim(self, context: _RetryContextIterator) -> OperationClaim:
        retried = _stamina_callable()
        name, span_name = callable_names(retried) if retried is not None else caller_names(*_SKIPPED_FRAMES)
        return OperationClaim(self, name, span_name)

    def _iter(self, wrapped: Callable[..., Iterator[Any]], instance: _RetryContextIterator, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
        claim = self._claim(instance)
        attempts = wrapped(*args, **kwargs)
        return attempts if claim is None else _claimed_iteration(attempts, claim)

    def _aiter(self, wrapped: Callable[..., Any], instance: _RetryContextIterator, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        claim = self._claim(instance)
        if claim is None:
            return wrapped(*args, **kwargs)
        token = claim_operation(claim)  # stamina's __aiter__ starts tenacity's loop right away
        try:
            return wrapped(*args, **kwargs)
        finally:
            release_claim(token)
