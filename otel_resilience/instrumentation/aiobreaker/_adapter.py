"""Translate aiobreaker's calls and state changes into core breaker events.

aiobreaker is pybreaker made for asyncio, with the same shape: a state object decides each call, and every transition
passes through one method. Hook points, and why:

- ``CircuitBreaker.call`` / ``call_async``: every guarded call (``breaker.call(f)``, ``await breaker.call_async(f)``,
  and the ``@breaker`` decorator, which calls them at call time, so functions decorated before instrumentation are
  traced). aiobreaker re-enters them: an open breaker past its timeout calls again once half-open, and a decorated
  function passed to ``call`` goes through ``call`` twice (``_ignore_on_call``). A re-entry before the call was
  admitted is the same user call and passes straight through; a call the guarded function makes is a new one.
- ``CircuitBreakerBaseState.before_call`` (closed and half-open states): the call is admitted, in that state.
- ``CircuitOpenState.before_call``: the open check; when it raises, the call is refused.
- ``CircuitBreaker._inc_counter``: a failure counted. An excluded exception counts as a success: ``ignored``.
- ``CircuitBreaker._create_new_state(..., notify=True)``: every transition (trip, timeout, probe result, ``open()`` or
  ``close()`` by hand, a state refreshed from shared storage), where aiobreaker tells its listeners. We add no
  listener of our own: the app would see it in ``breaker.listeners``.

State is read from the state object aiobreaker already resolved (``breaker._state``), never through ``breaker.state``
or ``current_state``, which read the storage (possibly Redis) and may notify listeners. The failure count is read
only from the in-memory storage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from aiobreaker import CircuitBreaker, CircuitBreakerError
from aiobreaker.state import CircuitBreakerBaseState, CircuitOpenState
from aiobreaker.storage.memory import CircuitMemoryStorage

from otel_resilience.core import REGISTRY, BreakerEntry, Telemetry, never_raises
from otel_resilience.core.breaker import (
    BreakerCall,
    admitted,
    any_active_call,
    current_call,
    failure_hook,
    normalise_state,
    refused,
    reported_transition,
    run_call,
    run_coroutine,
)
from otel_resilience.core.naming import breaker_name
from otel_resilience.patching import Patches

_FAILURE_COUNTED: Final = failure_hook(lambda breaker, _args: breaker)


def _read_state(breaker: CircuitBreaker) -> str | None:
    return normalise_state(breaker._state.state)


def _failure_count(breaker: CircuitBreaker) -> int | None:
    """The failure count, only where reading it costs no storage round trip (the in-memory storage)."""
    storage = breaker._state_storage
    return storage._fail_counter if type(storage) is CircuitMemoryStorage else None


class AioBreakerAdapter:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch(self, patches: Patches) -> None:
        """The call entry points; deferred until something records: the admission, refusal and failure hooks (they
        act only inside a call of ours) and the transition hook."""
        may_record = self.telemetry.may_record  # the wrappers begin with start_breaker_call: one context read
        patches.wrap(CircuitBreaker, "call", self._call, enabled=may_record)
        patches.wrap(CircuitBreaker, "call_async", self._call_async, enabled=may_record)
        patches.wrap(CircuitBreakerBaseState, "before_call", self._admission, enabled=any_active_call, deferred=True)
        patches.wrap(CircuitOpenState, "before_call", self._open_check, enabled=any_active_call, deferred=True)
        patches.wrap(CircuitBreaker, "_inc_counter", _FAILURE_COUNTED, enabled=any_active_call, deferred=True)
        patches.wrap(CircuitBreaker, "_create_new_state", self._new_state, deferred=True)

    def _entry(self, breaker: CircuitBreaker, guarded: Any) -> BreakerEntry:
        return REGISTRY.entry(
            breaker,
            self.telemetry.library,
            lambda: breaker_name(breaker.name, guarded, breaker),
            read_state=_read_state,
        )

    # --- calls -------------------------------------------------------------------------------------------------

    @never_raises
    def _begin(self, breaker: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> BreakerCall | None:
        active = current_call(breaker)
        if active is not None and not active.admitted:
            return None  # aiobreaker re-entering `call` for the same user call
        guarded = args[0] if args else kwargs.get("func")
        return self.telemetry.start_breaker_call(lambda: self._entry(breaker, guarded), _read_state(breaker), breaker)

    @never_raises
    def _settle(self, call: BreakerCall, error: BaseException | None) -> None:
        call.finish(error, failure_count=_failure_count(call.subject))  # type: ignore[arg-type]

    def _call(self, wrapped: Callable[..., Any], instance: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self._begin(instance, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        # A guarded generator is judged by aiobreaker as it is consumed: the span covers the consumption.
        return run_call(call, wrapped, args, kwargs, self._settle, follow_generators=True)

    def _call_async(self, wrapped: Callable[..., Any], instance: CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return run_coroutine(lambda: self._begin(instance, args, kwargs), wrapped, args, kwargs, self._settle)

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
                self.telemetry, instance, prev_state.state, new_state.state, lambda: self._entry(instance, None)
            )
        return new_state
