"""Translate pybreaker's calls and state changes into core breaker events.

``CircuitBreaker.call`` is every guarded call (decorator and ``calling()`` included), outside pybreaker's lock; a
re-entry before admission (the open -> half-open move) is the same call. ``CircuitBreakerState.before_call`` admits,
``CircuitOpenState.before_call`` refuses (pybreaker's listeners never hear of refusals), ``_inc_counter`` counts a
failure, and ``_create_new_state(notify=True)`` is every transition; no listener of ours is added. State is read from
``breaker._state``, never through getters that read storage or notify (docs/breakers.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import pybreaker

from otel_resilience.core import BreakerCall, Telemetry, never_raises, normalise_state, report_internal_error
from otel_resilience.core.breaker import (
    admitted,
    any_active_call,
    counting_end,
    current_call,
    failure_hook,
    refused,
    reported_transition,
    run_call,
)
from otel_resilience.core.naming import breaker_name, caller_names
from otel_resilience.patching import Patches

_PYBREAKER_MODULE: Final = pybreaker.CircuitBreaker.__module__
_FAILURE_COUNTED: Final = failure_hook()


def _read_state(breaker: pybreaker.CircuitBreaker) -> str | None:
    return normalise_state(breaker._state.name)


def _failure_count(breaker: pybreaker.CircuitBreaker) -> int | None:
    """The failure count, only where reading it costs no storage round trip (the in-memory storage)."""
    storage = breaker._state_storage
    return storage._fail_counter if type(storage) is pybreaker.CircuitMemoryStorage else None


_end_call = counting_end(_failure_count, "otel_resilience.instrumentation.pybreaker._adapter._failure_count")


def _is_calling_block(func: Any) -> bool:
    """``with breaker.calling():`` runs the block through ``call`` with a function of pybreaker's own."""
    return getattr(func, "__module__", None) == _PYBREAKER_MODULE


def _name(breaker: pybreaker.CircuitBreaker, guarded: Any) -> str:
    if not breaker.name and _is_calling_block(guarded):
        return caller_names("pybreaker")[0]  # an unnamed `calling()` block: the function it is written in
    return breaker_name(breaker.name, guarded, breaker)


class PyBreakerAdapter:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch(self, patches: Patches) -> None:
        """The call entry point; deferred until something records: the admission, refusal and failure hooks (they
        act only inside a call of ours) and the transition hook."""
        patches.wrap(pybreaker.CircuitBreaker, "call", self._call, enabled=self.telemetry.may_record)
        patches.wrap(pybreaker.CircuitBreakerState, "before_call", self._admission, enabled=any_active_call, deferred=True)
        patches.wrap(pybreaker.CircuitOpenState, "before_call", self._open_check, enabled=any_active_call, deferred=True)
        patches.wrap(pybreaker.CircuitBreaker, "_inc_counter", _FAILURE_COUNTED, enabled=any_active_call, deferred=True)
        patches.wrap(pybreaker.CircuitBreaker, "_create_new_state", self._new_state, deferred=True)

    # --- calls -------------------------------------------------------------------------------------------------

    def _begin(self, breaker: pybreaker.CircuitBreaker, guarded: Any) -> BreakerCall | None:
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            active = current_call(breaker)
            if active is not None and not active.admitted:
                return None  # pybreaker re-entering `call` for a probe: the same user call
            return BreakerCall.start(
                self.telemetry, breaker, _read_state(breaker), subject=breaker, guarded=guarded, name_of=_name,
                read_state=_read_state,
            )
        except Exception:
            report_internal_error("otel_resilience.instrumentation.pybreaker._adapter.PyBreakerAdapter._begin")
            return None

    def _call(
        self, wrapped: Callable[..., Any], instance: pybreaker.CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        guarded = args[0] if args else kwargs.get("func")
        call = self._begin(instance, guarded)
        if call is None:
            return wrapped(*args, **kwargs)
        # A guarded generator (and the `calling()` block) is judged by pybreaker as it is consumed.
        return run_call(
            call, wrapped, args, kwargs, _end_call, follow_generators=True, generator_is_block=_is_calling_block(guarded)
        )

    # --- inside a call -----------------------------------------------------------------------------------------

    def _admission(
        self, wrapped: Callable[..., Any], instance: pybreaker.CircuitBreakerState, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        admitted(instance._breaker, instance.name)
        return wrapped(*args, **kwargs)

    def _open_check(
        self, wrapped: Callable[..., Any], instance: pybreaker.CircuitOpenState, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            return wrapped(*args, **kwargs)
        except pybreaker.CircuitBreakerError:
            refused(instance._breaker)
            raise

    def _new_state(
        self, wrapped: Callable[..., Any], instance: pybreaker.CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        new_state = wrapped(*args, **kwargs)
        prev_state = kwargs.get("prev_state")
        if kwargs.get("notify") and prev_state is not None:
            reported_transition(
                self.telemetry, instance, prev_state.name, new_state.name, breaker=instance, name_of=_name,
                read_state=_read_state,
            )
        return new_state
