"""Every stamina form iterates a ``_RetryContextIterator``, whose ``__iter__``/``__aiter__`` (looked up at call time)
start a tenacity loop. stamina claims that loop (core/claims.py), and tenacity's loop hooks of our own
(`TenacityLoops`) record it under stamina's scope and names: one operation, counted once in the retry depth, whether or
not tenacity is instrumented too. Names come from ``RetryingCaller.__call__``, or for decorated functions from
`decorator_frames`. No hook is registered with stamina: its own instrumentation and the app's hooks stay as they are
(docs/retry-libraries.md).
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Awaitable, Callable, Generator, Iterator
from types import CodeType
from typing import Any, Final

import stamina
from stamina._core import _RetryContextIterator
from tenacity import BaseRetrying
from tenacity.asyncio import AsyncRetrying

from otel_resilience.core import Telemetry, never_raises, report_internal_error
from otel_resilience.core.claims import OperationClaim, claim_operation, current_claim, release_claim
from otel_resilience.core.naming import callable_names, caller_names
from otel_resilience.instrumentation.tenacity._adapter import TenacityLoops, TenacityLoop
from otel_resilience.patching import Patches

_SKIPPED_FRAMES: Final = ("stamina", "tenacity")
_OURS: Final = "otel_resilience"


def decorator_frames() -> tuple[frozenset[CodeType], str]:
    """stamina's internals that naming needs, in one place: the code of the functions that ``@stamina.retry`` puts in
    place of the app's (nested in ``stamina._core.retry``), and the name of their closure variable holding the app's
    callable. No public hook gives that callable to a function decorated before instrumentation; stamina's own name
    for it (``RetryDetails.name``) drops the class of a callable object. A test fails when stamina renames them."""
    codes: set[CodeType] = set()
    pending = [stamina.retry.__code__]
    while pending:
        for const in pending.pop().co_consts:
            if isinstance(const, CodeType):
                pending.append(const)
                if const.co_name.endswith("_inner"):
                    codes.add(const)
    return frozenset(codes), "wrapped"


_DECORATOR_CODES, _DECORATED_VARIABLE = decorator_frames()


def _decorated_callable() -> Any:
    """The app's callable, when the loop starting now is that of a function decorated with ``@stamina.retry`` (the
    first frame outside ours is stamina's decorated function). The walk starts above `StaminaAdapter._claim`, this
    function's caller's caller."""
    frame = sys._getframe(3)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(_OURS):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None or frame.f_code not in _DECORATOR_CODES:
        return None
    return frame.f_locals.get(_DECORATED_VARIABLE)


class _Called:
    """The callable a ``RetryingCaller`` was asked to call: named by the loop that the call starts, once (a
    ``retry_context`` inside that callable is a loop of its own)."""

    __slots__ = ("callable", "taken")

    def __init__(self, called: Any) -> None:
        self.callable = called
        self.taken = False


_CALLED: contextvars.ContextVar[_Called | None] = contextvars.ContextVar("otel_resilience_stamina_called", default=None)


def _retried_callable() -> Any:
    """The callable stamina is retrying: given to a ``RetryingCaller``, or decorated; None for a ``retry_context``
    block the app wrote."""
    called = _CALLED.get()
    if called is not None and not called.taken:
        called.taken = True
        return called.callable
    return _decorated_callable()


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


class _StaminaLoops(TenacityLoops):
    """Records the tenacity loops that stamina claims, under stamina's scope and names."""

    def __init__(self, telemetry: Telemetry, claimant: StaminaAdapter) -> None:
        super().__init__(telemetry)
        self.claimant = claimant

    def patch(self, patches: Patches) -> None:
        """stamina starts only iterator forms, and claims them only while something records: deferred until then."""
        patches.wrap(BaseRetrying, "__iter__", self._iter_form, enabled=current_claim, deferred=True)
        patches.wrap(AsyncRetrying, "__aiter__", self._aiter_form, enabled=current_claim, deferred=True)
        self.patch_loop_hooks(patches)

    def names(self, fn: Any) -> tuple[str, str] | None:
        claim = current_claim()
        if claim is None or not claim.take(self.claimant):
            return None
        return claim.name, claim.span_name

    def body_completed(self, run: TenacityLoop) -> None:
        """stamina retries on exceptions only: a body that completed ends the retry, successfully. (Otherwise a loop
        left by ``return`` inside ``async for``, whose iterator is not closed, would end only when tenacity's state
        is garbage collected.)"""
        run.ended_early()


class StaminaAdapter:
    """Holds the Telemetry for stamina, claims stamina's loops, and records them through its own tenacity hooks."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.loops = _StaminaLoops(telemetry, self)

    def patch(self, patches: Patches) -> None:
        recording = self.telemetry.recording
        self.loops.patch(patches)
        # the loops' claims need no context read: `RetryOperation.start` makes it (suppressed: no operation starts)
        may_record = self.telemetry.may_record
        patches.wrap(_RetryContextIterator, "__iter__", self._iter, enabled=may_record)
        patches.wrap(_RetryContextIterator, "__aiter__", self._aiter, enabled=may_record)
        patches.wrap(stamina.RetryingCaller, "__call__", self._caller_call, enabled=recording)
        patches.wrap(stamina.AsyncRetryingCaller, "__call__", self._async_caller_call, enabled=recording)

    def _claim(self) -> OperationClaim:
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            retried = _retried_callable()
            name, span_name = callable_names(retried) if retried is not None else caller_names(*_SKIPPED_FRAMES)
            return OperationClaim(self, name, span_name)
        except Exception:
            report_internal_error("otel_resilience.instrumentation.stamina._adapter.StaminaAdapter._claim")
            return None

    def _iter(self, wrapped: Callable[..., Iterator[Any]], instance: _RetryContextIterator, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[Any]:
        claim = self._claim()
        attempts = wrapped(*args, **kwargs)
        return attempts if claim is None else _claimed_iteration(attempts, claim)

    def _aiter(self, wrapped: Callable[..., Any], instance: _RetryContextIterator, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        claim = self._claim()
        if claim is None:
            return wrapped(*args, **kwargs)
        token = claim_operation(claim)  # stamina's __aiter__ starts tenacity's loop right away
        try:
            return wrapped(*args, **kwargs)
        finally:
            release_claim(token)

    # --- RetryingCaller / AsyncRetryingCaller: ``caller(on, callable_, *args, **kwargs)`` ------------------------

    def _caller_call(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        token = _CALLED.set(_Called(args[1] if len(args) > 1 else None))
        try:
            return wrapped(*args, **kwargs)
        finally:
            _CALLED.reset(token)

    async def _async_caller_call(
        self, wrapped: Callable[..., Awaitable[Any]], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        token = _CALLED.set(_Called(args[1] if len(args) > 1 else None))
        try:
            return await wrapped(*args, **kwargs)
        finally:
            _CALLED.reset(token)
