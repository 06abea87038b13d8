"""Translate circuitbreaker's (fabfuel) calls into core breaker events.

circuitbreaker has no listener API, and ``decorate()`` builds a closure that reaches the breaker only through what it
looks up at call time: the ``opened`` property (the open check: a refusal when it answers True to one of those
closures, told apart by their code), then ``call``/``call_generator``/``call_async``/``call_async_generator`` (an
admitted call), and ``_CircuitBreaker__call_failed`` (a failure). So import order does not matter. State is read
from ``_state`` and ``open_remaining``; transitions are seen by the calls that see them (docs/breakers.md).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any, Final

import circuitbreaker
from circuitbreaker import CircuitBreaker, CircuitBreakerError

from otel_resilience import semconv
from otel_resilience.core import Telemetry, never_raises, report_internal_error
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


_FAILURE_COUNTED: Final = failure_hook()


def _read_state(breaker: CircuitBreaker) -> str:
    """closed, open, or half_open for an open breaker past its recovery timeout (circuitbreaker's own arithmetic)."""
    if breaker._state != circuitbreaker.STATE_OPEN:
        return semconv.STATE_CLOSED
    return semconv.STATE_OPEN if breaker.open_remaining > 0 else semconv.STATE_HALF_OPEN


def _name(breaker: CircuitBreaker, function: Any) -> str:
    own = breaker.name
    derived = getattr(function, "__qualname__", None) or getattr(function, "__name__", None)
    if function is not None and own == derived:
        own = None  # the bare qualname circuitbreaker named itself after: ours is module.qualname
    return breaker_name(own, function, breaker)


def _decision_codes() -> frozenset[CodeType]:
    """The code of the closures ``decorate()`` builds: sync, generator, async and async generator."""
    builders = (CircuitBreaker._decorate_sync, CircuitBreaker._decorate_async)
    return frozenset(const for b in builders for const in b.__code__.co_consts if isinstance(const, CodeType))


class CircuitBreakerAdapter:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch(self, patches: Patches) -> None:
        """The admitted-call entry points; deferred until something records: the open check and the failure hook."""
        may_record = self.telemetry.may_record  # the wrappers begin with BreakerCall.start: one context read
        patches.wrap(CircuitBreaker, "call", self._call, enabled=may_record)
        patches.wrap(CircuitBreaker, "call_generator", self._call_generator, enabled=may_record)
        patches.wrap(CircuitBreaker, "call_async", self._call_async, enabled=may_record)
        patches.wrap(CircuitBreaker, "call_async_generator", self._call_async_generator, enabled=may_record)
        patches.replace(CircuitBreaker, "opened", self._open_check(vars(CircuitBreaker)["opened"]), deferred=True)
        patches.wrap(CircuitBreaker, "_CircuitBreaker__call_failed", _FAILURE_COUNTED, enabled=any_active_call, deferred=True)

    # --- admitted calls ----------------------------------------------------------------------------------------

    def _admit(self, breaker: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BreakerCall | None:
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            function = args[0] if args else kwargs.get("func")
            return self._start(breaker, function, _read_state(breaker))
        except Exception:
            report_internal_error("otel_resilience.instrumentation.circuitbreaker._adapter.CircuitBreakerAdapter._admit")
            return None

    def _start(self, breaker: CircuitBreaker, function: Any, state: str) -> BreakerCall | None:
        return BreakerCall.start(
            self.telemetry, breaker, state, subject=breaker, guarded=function, name_of=_name, read_state=_read_state
        )

    def _end_call(self, call: BreakerCall, error: BaseException | None) -> None:
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            breaker: CircuitBreaker = call.subject  # type: ignore[assignment]
            call.observe(_read_state(breaker))  # tripped, re-opened, or closed by a probe
            call.ended(error, failure_count=breaker.failure_count)
        except Exception:
            report_internal_error("otel_resilience.instrumentation.circuitbreaker._adapter.CircuitBreakerAdapter._end_call")

    def _call(self, wrapped: Callable[..., Any], instance: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self._admit(instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        return run_call(call, wrapped, args, kwargs, self._end_call)

    def _call_generator(self, wrapped: Callable[..., Any], instance: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return run_generator(lambda: self._admit(instance, args, kwargs), wrapped(*args, **kwargs), self._end_call)

    def _call_async(self, wrapped: Callable[..., Any], instance: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return run_coroutine(lambda: self._admit(instance, args, kwargs), wrapped, args, kwargs, self._end_call)

    def _call_async_generator(self, wrapped: Callable[..., Any], instance: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return run_async_generator(lambda: self._admit(instance, args, kwargs), wrapped(*args, **kwargs), self._end_call)

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
        call = self._start(breaker, decision.f_locals.get("function"), semconv.STATE_OPEN)
        if call is not None:
            call.refused_in(semconv.STATE_OPEN)
            call.ended(None, failure_count=breaker.failure_count, error_type=_REFUSAL)
