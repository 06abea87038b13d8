"""Translate circuitbreaker's (fabfuel) calls into core breaker events.

circuitbreaker has no listener API. ``decorate()`` builds, once per function, a closure that decides every call::

    if self.opened:                              # the open check
        return self.fallback_function(...)       # or: raise CircuitBreakerError(self)
    return self.call(function, ...)              # or call_generator / call_async / call_async_generator

That closure reaches the breaker only through attributes it looks up at call time, and those are the hook points. So
a function decorated before instrumentation is traced exactly like one decorated after, and ``uninstrument()`` leaves
nothing behind in either (a patched ``decorate`` would leave our wrapper in every function decorated meanwhile):

- ``call``, ``call_generator``, ``call_async``, ``call_async_generator``: an admitted call (also ``breaker.call(f)``
  used directly, which circuitbreaker never refuses). The span covers the call, or a generator's consumption.
- the ``opened`` property: the open check. When it answers True to one of the closures ``decorate()`` builds (told
  apart by their code objects, so that ``CircuitBreakerMonitor.get_open()`` or an app's own health check reading
  ``opened`` is not taken for a call), the call is refused: a ``rejected`` span, ended at the refusal. A fallback, if
  any, runs after it, under the caller's span. Only this path, which is rare, looks at the calling frame.
- ``_CircuitBreaker__call_failed``: where circuitbreaker counts a failure. An exception it does not expect resets the
  breaker instead: ``ignored``.

State: circuitbreaker stores only closed or open; an open breaker past its recovery timeout is half-open by its own
arithmetic (``open_remaining``, on ``circuitbreaker.monotonic``). We read ``_state`` and ``open_remaining``, never the
``state`` property, which a subclass may have pointed at a shared store. Transitions are seen by comparing the state a
call is admitted in and the state it leaves (and the gauge's reading) with the last one seen; the registry counts each
once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, Final

import circuitbreaker
from circuitbreaker import CircuitBreaker, CircuitBreakerError

from otel_resilience import semconv
from otel_resilience.core import REGISTRY, BreakerEntry, Telemetry, never_raises
from otel_resilience.core.breaker import (
    BreakerCall,
    any_active_call,
    failure_hook,
    run_async_generator,
    run_call,
    run_coroutine,
    run_generator,
)
from otel_resilience.core.naming import breaker_name
from otel_resilience.patching import Patches

_REFUSAL: Final = f"{CircuitBreakerError.__module__}.{CircuitBreakerError.__qualname__}"
"""`error.type` of a refused call: what the caller gets without a fallback, and names the refusal with one."""


_FAILURE_COUNTED: Final = failure_hook(lambda breaker, _args: breaker)


def _read_state(breaker: CircuitBreaker) -> str:
    """closed, open, or half_open for an open breaker past its recovery timeout (circuitbreaker's own arithmetic)."""
    if breaker._state != circuitbreaker.STATE_OPEN:
        return semconv.STATE_CLOSED
    return semconv.STATE_OPEN if breaker.open_remaining > 0 else semconv.STATE_HALF_OPEN


def _decision_codes() -> frozenset[CodeType]:
    """The code of the closures ``decorate()`` builds: sync, generator, async and async generator."""
    builders = (CircuitBreaker._decorate_sync, CircuitBreaker._decorate_async)
    return frozenset(const for b in builders for const in b.__code__.co_consts if isinstance(const, CodeType))


class CircuitBreakerAdapter:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch(self, patches: Patches) -> None:
        """The admitted-call entry points; deferred until something records: the open check and the failure hook."""
        may_record = self.telemetry.may_record  # the wrappers begin with start_breaker_call: one context read
        patches.wrap(CircuitBreaker, "call", self._call, enabled=may_record)
        patches.wrap(CircuitBreaker, "call_generator", self._call_generator, enabled=may_record)
        patches.wrap(CircuitBreaker, "call_async", self._call_async, enabled=may_record)
        patches.wrap(CircuitBreaker, "call_async_generator", self._call_async_generator, enabled=may_record)
        patches.replace(CircuitBreaker, "opened", self._open_check(vars(CircuitBreaker)["opened"]), deferred=True)
        patches.wrap(CircuitBreaker, "_CircuitBreaker__call_failed", _FAILURE_COUNTED, enabled=any_active_call, deferred=True)

    def _entry(self, breaker: CircuitBreaker, guarded: Callable[[], Any]) -> BreakerEntry:
        def name() -> str:
            function = guarded()
            own = breaker.name
            derived = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
            if function is not None and own == derived:
                own = None  # the bare qualname circuitbreaker named itself after: ours is module.qualname
            return breaker_name(own, function, breaker)

        return REGISTRY.entry(breaker, self.telemetry.library, name, read_state=_read_state)

    # --- admitted calls ----------------------------------------------------------------------------------------

    @never_raises
    def _admit(self, breaker: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BreakerCall | None:
        function = args[0] if args else kwargs.get("func")
        return self.telemetry.start_breaker_call(
            lambda: self._entry(breaker, lambda: function), _read_state(breaker), breaker
        )

    @never_raises
    def _settle(self, call: BreakerCall, error: BaseException | None) -> None:
        breaker: CircuitBreaker = call.subject  # type: ignore[assignment]
        call.entry.observe(self.telemetry, _read_state(breaker), call)  # tripped, re-opened, or closed by a probe
        call.finish(error, failure_count=breaker.failure_count)

    def _call(self, wrapped: Callable[..., Any], instance: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self._admit(instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        return run_call(call, wrapped, args, kwargs, self._settle)

    def _call_generator(self, wrapped: Callable[..., Any], instance: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return run_generator(lambda: self._admit(instance, args, kwargs), wrapped(*args, **kwargs), self._settle)

    def _call_async(self, wrapped: Callable[..., Any], instance: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return run_coroutine(lambda: self._admit(instance, args, kwargs), wrapped, args, kwargs, self._settle)

    def _call_async_generator(self, wrapped: Callable[..., Any], instance: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return run_async_generator(lambda: self._admit(instance, args, kwargs), wrapped(*args, **kwargs), self._settle)

    # --- refusals and failures ---------------------------------------------------------------------------------

    def _open_check(self, original: property) -> property:
        """The ``opened`` property, answering exactly as before, that reports a refusal when it answers True to one
        of the closures ``decorate()`` builds."""
        fget = original.fget
        decisions = _decision_codes()
        refused = self._refused

        def opened(breaker: CircuitBreaker) -> bool:
            is_open = fget(breaker)  # type: ignore[misc]
            if is_open:
                caller = sys._getframe(1)
                if caller.f_code in decisions:
                    refused(breaker, caller)
            return is_open  # type: ignore[no-any-return]

        return property(opened, original.fset, original.fdel, original.__doc__)

    @never_raises
    def _refused(self, breaker: CircuitBreaker, decision: FrameType) -> None:
        call = self.telemetry.start_breaker_call(
            lambda: self._entry(breaker, lambda: decision.f_locals.get("function")), semconv.STATE_OPEN, breaker
        )
        if call is not None:
            call.refused_in(semconv.STATE_OPEN)
            call.finish(None, failure_count=breaker.failure_count, error_type=_REFUSAL)
