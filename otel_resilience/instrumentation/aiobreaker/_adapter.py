"""Translate aiobreaker's calls and state changes into core breaker events.

aiobreaker is pybreaker made for asyncio, and has the same hook points: ``CircuitBreaker.call``/``call_async`` (every
guarded call; a re-entry before admission is the same call), ``CircuitBreakerBaseState.before_call`` (admitted),
``CircuitOpenState.before_call`` (refused), ``_inc_counter`` (a failure) and ``_create_new_state(notify=True)`` (every
transition). State is read from ``breaker._state``, never through getters that read storage (docs/breakers.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from aiobreaker import CircuitBreaker, CircuitBreakerError
from aiobreaker.state import CircuitBreakerBaseState, CircuitOpenState
from aiobreaker.storage.memory import CircuitMemoryStorage

from otel_resilience.core import Telemetry, never_raises, report_internal_error
from otel_resilience.core.breaker import (
    BreakerCall,
    admitted,
    any_active_call,
    counting_end,
    current_call,
    failure_hook,
    normalise_state,
    refused,
    reported_transition,
    run_call,
    run_coroutine,
)
from otel_resilience.patching import Patches

_FAILURE_COUNTED: Final = failure_hook()


def _read_state(breaker: CircuitBreaker) -> str | None:
    return normalise_state(breaker._state.state)


def _failure_count(breaker: CircuitBreaker) -> int | None:
    """The failure count, only where reading it costs no storage round trip (the in-memory storage)."""
    storage = breaker._state_storage
    return storage._fail_counter if type(storage) is CircuitMemoryStorage else None


_end_call = counting_end(_failure_count, "otel_resilience.instrumentation.aiobreaker._adapter._failure_count")


class AioBreakerAdapter:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch(self, patches: Patches) -> None:
        """The call entry points; deferred until something records: the admission, refusal and failure hooks (they
        act only inside a call of ours) and the transition hook."""
        may_record = self.telemetry.may_record  # the wrappers begin with BreakerCall.start: one context read
        patches.wrap(CircuitBreaker, "call", self._call, enabled=may_record)
        patches.wrap(CircuitBreaker, "call_async", self._call_async, enabled=may_record)
        patches.wrap(CircuitBreakerBaseState, "before_call", self._admission, enabled=any_active_call, deferred=True)
        patches.wrap(CircuitOpenState, "before_call", self._open_check, enabled=any_active_call, deferred=True)
        patches.wrap(CircuitBreaker, "_inc_counter", _FAILURE_COUNTED, enabled=any_active_call, deferred=True)
        patches.wrap(CircuitBreaker, "_create_new_state", self._new_state, deferred=True)

    # --- calls -------------------------------------------------------------------------------------------------

    def _begin(self, breaker: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BreakerCall | None:
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            active = current_call(breaker)
            if active is not None and not active.admitted:
                return None  # aiobreaker re-entering `call` for the same user call
            guarded = args[0] if args else kwargs.get("func")
            return BreakerCall.start(
                self.telemetry, breaker, _read_state(breaker), subject=breaker, guarded=guarded, read_state=_read_state
            )
        except Exception:
            report_internal_error("otel_resilience.instrumentation.aiobreaker._adapter.AioBreakerAdapter._begin")
            return None

    def _call(self, wrapped: Callable[..., Any], instance: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self._begin(instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        # A guarded generator is judged by aiobreaker as it is consumed: the span covers the consumption.
        return run_call(call, wrapped, args, kwargs, _end_call, follow_generators=True)

    def _call_async(self, wrapped: Callable[..., Any], instance: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return run_coroutine(lambda: self._begin(instance, args, kwargs), wrapped, args, kwargs, _end_call)

    # --- inside a call -----------------------------------------------------------------------------------------

    def _admission(self, wrapped: Callable[..., Any], instance: CircuitBreakerBaseState, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        admitted(instance._breaker, instance.state)
        return wrapped(*args, **kwargs)

    def _open_check(self, wrapped: Callable[..., Any], instance: CircuitOpenState, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return wrapped(*args, **kwargs)
        except CircuitBreakerError:
            refused(instance._breaker)
            raise

    def _new_state(self, wrapped: Callable[..., Any], instance: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        new_state = wrapped(*args, **kwargs)
        notify = kwargs["notify"] if "notify" in kwargs else len(args) > 2 and args[2]
        prev_state = kwargs["prev_state"] if "prev_state" in kwargs else (args[1] if len(args) > 1 else None)
        if notify and prev_state is not None:
            reported_transition(
                self.telemetry, instance, prev_state.state, new_state.state, breaker=instance, read_state=_read_state
            )
        return new_state
