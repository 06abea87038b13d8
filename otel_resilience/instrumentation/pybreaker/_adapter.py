"""Translate pybreaker's calls and state changes into core breaker events.

Hook points, and why:

- ``CircuitBreaker.call``: every guarded call goes through it (``breaker.call(f)``, the ``@breaker`` decorator at call
  time — so functions decorated before instrumentation are traced — and ``with breaker.calling():``). It is where a
  call begins and ends, wrapped outside pybreaker's lock. pybreaker re-enters ``call`` when an open breaker past its
  timeout moves to half-open: that re-entry is part of the same user call, so it passes straight through.
- ``CircuitOpenState.before_call``: where pybreaker refuses a call. pybreaker's listeners are never told about
  refused calls; reaching this check without then moving to half-open means the guarded function never ran.
- ``CircuitBreaker._create_new_state`` with ``notify=True``: the one place every transition passes (trip, timeout,
  probe result, a state refreshed from shared storage). Only reached on a transition, so it costs nothing per call.

State is read from ``breaker._state`` (the state object pybreaker already resolved), never through ``breaker.state``
or ``current_state``, which read the storage (possibly Redis) and notify listeners.
"""

from __future__ import annotations

import contextvars
import types
from collections.abc import Callable, Generator
from typing import Any, Final

import pybreaker

from otel_resilience import semconv
from otel_resilience.core import REGISTRY, BreakerCall, BreakerEntry, Telemetry, never_raises
from otel_resilience.core.naming import caller_names, callable_names
from otel_resilience.instrumentation._base import Patches

_PYBREAKER_MODULE: Final = pybreaker.CircuitBreaker.__module__


def _state_name(pybreaker_state: str) -> str:
    """pybreaker says ``half-open``; the contract says ``half_open``."""
    return pybreaker_state.replace("-", "_")


def _read_state(breaker: pybreaker.CircuitBreaker) -> str:
    return _state_name(breaker._state.name)


def _failure_count(breaker: pybreaker.CircuitBreaker) -> int | None:
    """The failure count, only where reading it costs no storage round trip (the in-memory storage)."""
    storage = breaker._state_storage
    return storage._fail_counter if type(storage) is pybreaker.CircuitMemoryStorage else None


class _Guarded:
    """One user call through a breaker, while it runs."""

    __slots__ = ("breaker", "call", "state_before", "open_check", "probe", "last_transition")

    def __init__(self, breaker: pybreaker.CircuitBreaker, call: BreakerCall, state_before: str) -> None:
        self.breaker = breaker
        self.call = call
        self.state_before = state_before
        self.open_check = False  # reached pybreaker's "still open?" check
        self.probe = False  # admitted as a half-open probe after the timeout
        self.last_transition: tuple[str, str] | None = None

    @never_raises
    def finish(self, error: BaseException | None) -> None:
        if error is not None and isinstance(error, pybreaker.CircuitBreakerError) and self.open_check and not self.probe:
            self.call.admitted_in(semconv.STATE_OPEN)
            self.call.ended(semconv.CALL_REJECTED, error, failure_count=_failure_count(self.breaker))
            return
        self.call.admitted_in(self._admitted_state())
        if error is None:
            result = semconv.CALL_SUCCESS
        elif self.breaker.is_system_error(error):
            result = semconv.CALL_FAILURE
        else:
            result = semconv.CALL_IGNORED
        self.call.ended(result, error, failure_count=_failure_count(self.breaker))

    def _admitted_state(self) -> str:
        """The state the guarded function ran in: half_open for a probe; else the state a transition caused by the
        call's outcome left (closed → open on a trip); else the state the call found."""
        if self.probe:
            return semconv.STATE_HALF_OPEN
        if self.last_transition is not None:
            return self.last_transition[0]
        return self.state_before


_GUARDED: contextvars.ContextVar[_Guarded | None] = contextvars.ContextVar("otel_resilience_pybreaker", default=None)


class PyBreakerAdapter:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch(self, patches: Patches) -> None:
        """The entry point now; the refusal and transition hooks once something records."""
        patches.wrap(pybreaker.CircuitBreaker, "call", self._call, enabled=self.telemetry.recording)
        self.telemetry.when_live(lambda: self._patch_state_hooks(patches))

    def _patch_state_hooks(self, patches: Patches) -> None:
        patches.wrap(pybreaker.CircuitOpenState, "before_call", self._open_check, enabled=_GUARDED.get)
        patches.wrap(pybreaker.CircuitBreaker, "_create_new_state", self._new_state)

    def _entry(self, breaker: pybreaker.CircuitBreaker, func: Any) -> BreakerEntry:
        def name() -> str:
            if breaker.name:
                return str(breaker.name)
            if getattr(func, "__module__", None) == _PYBREAKER_MODULE:  # `with breaker.calling():`
                return caller_names("pybreaker")[0]
            return callable_names(func)[0]

        return REGISTRY.entry(breaker, self.telemetry.library, name, read_state=_read_state)

    @never_raises
    def _start(self, breaker: pybreaker.CircuitBreaker, func: Any) -> _Guarded | None:
        state = _read_state(breaker)
        call = self.telemetry.start_breaker_call(self._entry(breaker, func), state)
        return None if call is None else _Guarded(breaker, call, state)

    def _call(
        self, wrapped: Callable[..., Any], instance: pybreaker.CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        active = _GUARDED.get()
        if active is not None and active.breaker is instance:
            return wrapped(*args, **kwargs)  # pybreaker re-entering `call` for a probe: the same user call
        guarded = self._start(instance, args[0] if args else kwargs.get("func"))
        if guarded is None:
            return wrapped(*args, **kwargs)
        token = _GUARDED.set(guarded)
        context_token = guarded.call.activate()
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            guarded.call.deactivate(context_token)
            _GUARDED.reset(token)
            guarded.finish(exc)
            raise
        guarded.call.deactivate(context_token)
        _GUARDED.reset(token)
        if isinstance(result, types.GeneratorType):
            # The guarded function returned a generator: pybreaker judges it when it is consumed, and so do we.
            is_calling_block = getattr(args[0] if args else None, "__module__", None) == _PYBREAKER_MODULE
            return _consumed(result, guarded, current=is_calling_block)
        guarded.finish(None)
        return result

    def _open_check(
        self, wrapped: Callable[..., Any], instance: pybreaker.CircuitOpenState, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        active = _GUARDED.get()
        if active is not None and active.breaker is instance._breaker:
            active.open_check = True
        return wrapped(*args, **kwargs)

    def _new_state(
        self, wrapped: Callable[..., Any], instance: pybreaker.CircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        new_state = wrapped(*args, **kwargs)
        if kwargs.get("notify"):
            self._transition(instance, kwargs.get("prev_state"), new_state)
        return new_state

    @never_raises
    def _transition(self, breaker: pybreaker.CircuitBreaker, prev_state: Any, new_state: Any) -> None:
        if prev_state is None or not self.telemetry.recording():
            return
        previous, state = _state_name(prev_state.name), _state_name(new_state.name)
        if previous == state:
            return
        active = _GUARDED.get()
        if active is None or active.breaker is not breaker:
            consuming = _CONSUMING.get()
            active = consuming if consuming is not None and consuming.breaker is breaker else None
        guarded = active
        if guarded is None:
            # No call of ours is running (`breaker.open()` by hand, a state refreshed from shared storage): count it.
            # A breaker never called yet and unnamed is known by its class until then.
            entry = REGISTRY.entry(
                breaker,
                self.telemetry.library,
                lambda: str(breaker.name or callable_names(type(breaker))[0]),
                read_state=_read_state,
            )
            entry.transition(self.telemetry, previous, state)
            return
        if previous == semconv.STATE_OPEN and state == semconv.STATE_HALF_OPEN:
            guarded.probe = True
        guarded.last_transition = (previous, state)
        guarded.call.entry.transition(self.telemetry, previous, state, guarded.call)


_CONSUMING: contextvars.ContextVar[_Guarded | None] = contextvars.ContextVar(
    "otel_resilience_pybreaker_consuming", default=None
)
"""The call whose guarded generator (or ``calling()`` block) pybreaker is judging right now, in this thread or task:
the transitions it causes belong to that call. Per thread and task, because many calls through one breaker may be
consumed at once (``with breaker.calling():`` blocks that await, in concurrent tasks)."""


def _driving(guarded: _Guarded, step: Callable[..., Any], *args: Any) -> Any:
    """Advance pybreaker's generator (``next``, ``send``, ``throw``, ``close``) with `guarded` as the call consumed."""
    token = _CONSUMING.set(guarded)
    try:
        return step(*args)
    finally:
        _CONSUMING.reset(token)


def _consumed(generator: Generator[Any, Any, Any], guarded: _Guarded, *, current: bool) -> Generator[Any, Any, Any]:
    """Delegate to pybreaker's generator exactly (send, throw, close), ending the call's span when it is consumed.
    For ``with breaker.calling():`` the span is current during the block's body."""
    try:
        value = _driving(guarded, next, generator)
        while True:
            token = guarded.call.activate() if current else None
            try:
                sent = yield value
            except GeneratorExit:
                _deactivate(guarded.call, token)
                _driving(guarded, generator.close)
                raise
            except BaseException as exc:  # thrown in by the consumer: pybreaker judges it
                _deactivate(guarded.call, token)
                value = _driving(guarded, generator.throw, exc)
                continue
            _deactivate(guarded.call, token)
            value = _driving(guarded, generator.send, sent)
    except StopIteration as stop:
        guarded.finish(None)
        return stop.value
    except GeneratorExit:
        guarded.finish(None)
        raise
    except BaseException as exc:
        guarded.finish(exc)
        raise


def _deactivate(call: BreakerCall, token: object | None) -> None:
    if token is not None:
        call.deactivate(token)
