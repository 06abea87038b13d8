"""Translate tenacity's control flow into core retry events (docs/telemetry.md).

tenacity decides everything in ``iter(retry_state)`` (``DoAttempt``, ``DoSleep(delay)``, the final value, or a raise),
so one hook there sees every attempt, every verdict and the wait tenacity chose, never recomputed. The operation is
bracketed where users enter: ``Retrying.__call__`` / ``AsyncRetrying.__call__`` (call forms, also decorated before
instrumentation), ``BaseRetrying.__iter__`` and ``AsyncRetrying.__aiter__``/``__anext__`` (iterator forms, whose
bodies are made current by ``AttemptManager.__enter__``/``__exit__``). The running loop reaches ``iter`` through a
context variable: a ``Retrying`` object is often shared between threads and tasks.
"""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from typing import Any, Final

import tenacity
from tenacity import AttemptManager, BaseRetrying, DoAttempt, DoSleep, RetryCallState, Retrying
from tenacity.asyncio import AsyncRetrying

from otel_resilience import semconv
from otel_resilience.core import Telemetry, outcome, report_internal_error
from otel_resilience.core.claims import current_claim
from otel_resilience.core.naming import caller_names, callable_names
from otel_resilience.core.retry import RetryOperation, run_as_current, run_as_current_async
from otel_resilience.patching import Patches

_SKIPPED_FRAMES: Final = ("tenacity",)


class TenacityLoop:
    """One tenacity operation in flight: its core operation and what ``iter`` told us so far."""

    __slots__ = (
        "op", "retrying", "owner", "activates", "token", "result", "body_done", "body_error", "key", "__weakref__"
    )

    def __init__(self, op: RetryOperation, retrying: BaseRetrying, activates: bool, owner: TenacityLoops) -> None:
        self.op = op
        self.retrying = retrying
        self.owner = owner  # the adapter that started it: only its hooks act on it (several adapters may hook tenacity)
        self.activates = activates  # call forms: iter() makes the attempt current; iterator forms: `with attempt:`
        self.token: object | None = None
        self.result: str | None = None
        self.body_done = False  # iterator forms: the `with attempt:` body of the current attempt has finished
        self.body_error: BaseException | None = None
        self.key: weakref.ref[RetryCallState] | None = None  # iterator forms: its entry in `_BY_STATE`

    def release(self) -> None:
        """The operation has ended: an iterator form's state no longer needs its run. (tenacity's async state and its
        loop refer to each other, so the state lives until the garbage collector runs; its entry in `_BY_STATE` would
        keep this run, its spans and contexts alive as long.)"""
        key = self.key
        if key is not None:
            self.key = None
            _BY_STATE.pop(key, None)  # the key goes with its callback, which then never runs

    def before_iter(self) -> None:
        """The attempt that was current (call forms) is no longer: tenacity decides what follows."""
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            if self.token is not None:
                self.op.deactivate(self.token)
                self.token = None
        except Exception:
            report_internal_error("otel_resilience.instrumentation.tenacity._adapter.TenacityLoop.before_iter")

    def after_iter(self, retry_state: RetryCallState, do: Any, raised: BaseException | None) -> None:
        """tenacity decided (`do`, or `raised`): the attempt that ran ended, and another may start."""
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            if retry_state.outcome is not None:
                self._attempt_decided(retry_state, do, raised)
            if raised is None and isinstance(do, DoAttempt):
                self.op.attempt_started()
                if self.activates:
                    self.token = self.op.activate()
        except Exception:
            report_internal_error("otel_resilience.instrumentation.tenacity._adapter.TenacityLoop.after_iter")

    def _attempt_decided(self, retry_state: RetryCallState, do: Any, raised: BaseException | None) -> None:
        future = retry_state.outcome
        assert future is not None
        error = future.exception()  # None when it did not fail (``future.failed`` asks the same, under a lock too)
        sleeps = raised is None and isinstance(do, DoSleep)
        if sleeps and error is not None:  # the common retry: a raised error, another attempt after the wait
            self.op.attempt_ended(error, next_delay=float(do))
            return
        state = self.retrying.iter_state  # a thread-local read: only when the verdict needs it
        retry_wanted = bool(state.is_explicit_retry or state.retry_run_result)
        error_type = semconv.REJECTED_RESULT if error is None and retry_wanted else None
        if sleeps:
            self.op.attempt_ended(error, error_type=error_type, next_delay=float(do))
            return
        self.op.attempt_ended(error, error_type=error_type)
        # stopped (RetryError, reraise, or retry_error_callback's value), accepted, or raised what is not retried
        self.result = outcome.final_result(retry_wanted=retry_wanted, failed=raised is not None)

    def ended(self, error: BaseException | None) -> None:
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            self.before_iter()
            self.op.ended(self.result, error)
            self.release()
        except Exception:
            report_internal_error("otel_resilience.instrumentation.tenacity._adapter.TenacityLoop.ended")

    def ended_early(self) -> None:
        """The app left the loop before tenacity concluded (``return`` or ``break`` inside it, or the loop object
        was dropped)."""
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            if self.op.is_ended:
                return
            body_error = self.body_error
            self.body_error = None
            left_after_success = self.body_done and body_error is None and self.result in (None, semconv.RESULT_SUCCESS)
            self.op.attempt_ended(body_error)
            self.op.ended(outcome.abandoned_result(left_after_success))
            self.release()
        except Exception:
            report_internal_error("otel_resilience.instrumentation.tenacity._adapter.TenacityLoop.ended_early")


_RUN: contextvars.ContextVar[TenacityLoop | None] = contextvars.ContextVar("otel_resilience_tenacity_run", default=None)
_BY_STATE: dict[weakref.ref[RetryCallState], TenacityLoop] = {}
"""Iterator forms: the run of each live RetryCallState, for ``with attempt:`` and ``async for`` (which only know the
state), found with ``_BY_STATE.get(weakref.ref(state))`` (a weak reference equals another to the same live object).
Each key's callback forgets a run whose state was dropped, ending it if its loop was left before tenacity concluded
(that leaves no trace in tenacity): a WeakKeyDictionary and a ``weakref.finalize`` in one reference."""


def _track(retry_state: RetryCallState, run: TenacityLoop) -> None:
    run.key = key = weakref.ref(retry_state, _state_dropped)
    _BY_STATE[key] = run


def _state_dropped(key: weakref.ref[RetryCallState]) -> None:
    run = _BY_STATE.pop(key, None)
    if run is not None:
        run.ended_early()  # guarded inside; returns at once if the operation has ended


def _max_attempts(stop: Any) -> int | None:
    """The policy's attempt limit, when it states one (``stop_after_attempt``, also inside ``a | b`` and ``a & b``).
    The classes are looked up in the stop's MRO: tenacity's stops are ABCs, whose ``isinstance`` runs a Python-level
    check each time, and this runs on every call (0.77 µs instead of 1.04 µs for stamina's stop here)."""
    mro = type(stop).__mro__
    if tenacity.stop_after_attempt in mro:
        return int(stop.max_attempt_number)
    if tenacity.stop_any in mro:
        limits = [n for n in map(_max_attempts, stop.stops) if n is not None]
        return min(limits) if limits else None
    return None


_iterator_runs_exist: Final = _BY_STATE.__len__
"""The check of the hooks that only act on an iterator form's run: a C call, so that with no run in flight ``with
attempt:`` costs little more than the patch."""


class TenacityLoops:
    """The hooks that follow one tenacity loop from its start to its end: ``iter`` (each attempt's start, verdict and
    chosen wait), ``with attempt:`` and ``async for``. Each adapter acts only on the runs it started (several
    adapters subscribe to these hook points: stamina's records the tenacity loops it runs)."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch_loop_hooks(self, patches: Patches) -> None:
        """Deferred until something records (they act only on a run of ours, and there is none before); then their
        checks are C calls (a context variable, a dict's length)."""
        patches.wrap(BaseRetrying, "iter", self._iter, enabled=_RUN.get, deferred=True)
        patches.wrap(AsyncRetrying, "iter", self._async_iter, enabled=_RUN.get, deferred=True)
        patches.wrap(AsyncRetrying, "__anext__", self._anext, enabled=_iterator_runs_exist, deferred=True)
        patches.wrap(AttemptManager, "__enter__", self._attempt_enter, enabled=_iterator_runs_exist, deferred=True)
        patches.wrap(AttemptManager, "__exit__", self._attempt_exit, enabled=_iterator_runs_exist, deferred=True)

    def names(self, fn: Any) -> tuple[str, str] | None:
        """(``retry.name``, span name) of a loop starting now around `fn` (None for iterator forms); None: this
        adapter does not record that loop."""
        raise NotImplementedError

    def body_completed(self, run: TenacityLoop) -> None:
        """A ``with attempt:`` body of `run` completed without an exception (tenacity may still retry its result)."""

    def _start(self, retrying: BaseRetrying, fn: Any, activates: bool, tracked: bool = False) -> TenacityLoop | None:
        """The run of one call, or None when nothing records. `tracked`: the async iterator form's run, found later
        by tenacity's state (`_track`), which ``__aiter__`` has just made."""
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            names = self.names(fn)
            if names is None:
                return None
            op = RetryOperation.start(
                self.telemetry, names[0], span_name=names[1], max_attempts=_max_attempts(retrying.stop)
            )
            if op is None:
                return None
            run = TenacityLoop(op, retrying, activates, self)
            if tracked:
                _track(retrying._retry_state, run)
            return run
        except Exception:
            report_internal_error("otel_resilience.instrumentation.tenacity._adapter.TenacityLoops._start")
            return None

    # --- operations: iterator forms --------------------------------------------------------------------------

    def _iter_form(
        self, wrapped: Callable[..., Iterator[AttemptManager]], instance: BaseRetrying, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Iterator[AttemptManager]:
        attempts = wrapped(*args, **kwargs)
        if not getattr(instance, "enabled", True):  # `enabled` is tenacity >= 9
            return attempts
        run = self._start(instance, None, activates=False)
        if run is None:
            return attempts
        return _traced_attempts(attempts, run)

    def _aiter_form(
        self, wrapped: Callable[..., AsyncIterator[AttemptManager]], instance: AsyncRetrying, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[AttemptManager]:
        result = wrapped(*args, **kwargs)
        if getattr(instance, "enabled", True):
            self._start(instance, None, activates=False, tracked=True)  # guarded inside
        return result

    def _anext(
        self, wrapped: Callable[..., Awaitable[AttemptManager]], instance: AsyncRetrying, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Awaitable[AttemptManager]:
        run = _BY_STATE.get(weakref.ref(instance._retry_state))
        if run is None or run.owner is not self:
            return wrapped(*args, **kwargs)
        return _traced_anext(wrapped(*args, **kwargs), run)

    # --- attempts ------------------------------------------------------------------------------------------------

    def _iter(self, wrapped: Callable[..., Any], instance: BaseRetrying, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        run = _RUN.get()
        if run is None or run.retrying is not instance or run.owner is not self:
            return wrapped(*args, **kwargs)
        retry_state = args[0] if args else kwargs["retry_state"]
        if run.token is not None:  # call forms; an iterator form's attempt was made current by `with attempt:` only
            run.before_iter()
        try:
            do = wrapped(*args, **kwargs)
        except BaseException as exc:
            run.after_iter(retry_state, None, exc)
            raise
        run.after_iter(retry_state, do, None)
        return do

    def _async_iter(
        self, wrapped: Callable[..., Awaitable[Any]], instance: AsyncRetrying, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Awaitable[Any]:
        run = _RUN.get()
        if run is None or run.retrying is not instance or run.owner is not self:
            return wrapped(*args, **kwargs)
        return _traced_async_iter(wrapped(*args, **kwargs), run, args[0] if args else kwargs["retry_state"])

    def _attempt_enter(self, wrapped: Callable[..., Any], instance: AttemptManager, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        run = _BY_STATE.get(weakref.ref(instance.retry_state))
        if run is not None and run.owner is self and run.token is None:
            run.body_done = False
            run.body_error = None
            run.token = run.op.activate()  # guarded inside
        return wrapped(*args, **kwargs)

    def _attempt_exit(self, wrapped: Callable[..., Any], instance: AttemptManager, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        run = _BY_STATE.get(weakref.ref(instance.retry_state))
        if run is not None and run.owner is self:
            run.before_iter()  # the body is over: the attempt is no longer current
            run.body_done = True
            run.body_error = args[1] if len(args) > 1 else None
            if run.body_error is None:
                self.body_completed(run)
        return wrapped(*args, **kwargs)


class TenacityAdapter(TenacityLoops):
    """Holds the Telemetry for tenacity and installs the hooks: the entry points users call, and the loop hooks.
    A loop that another library runs on tenacity and claims (`otel_resilience.core.claims`: stamina's) is that
    library's adapter's to record; this one stays out of it."""

    def patch(self, patches: Patches) -> None:
        recording = self.telemetry.recording
        patches.wrap(Retrying, "__call__", self._call, enabled=recording)
        patches.wrap(AsyncRetrying, "__call__", self._async_call, enabled=recording)
        patches.wrap(BaseRetrying, "__iter__", self._iter_form, enabled=recording)
        patches.wrap(AsyncRetrying, "__aiter__", self._aiter_form, enabled=recording)
        self.patch_loop_hooks(patches)

    def names(self, fn: Any) -> tuple[str, str] | None:
        if current_claim() is not None:
            return None  # a loop another library runs on tenacity: that library's adapter records it
        return callable_names(fn) if fn is not None else caller_names(*_SKIPPED_FRAMES)

    # --- operations: call forms ------------------------------------------------------------------------------

    def _call(self, wrapped: Callable[..., Any], instance: Retrying, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not getattr(instance, "enabled", True):  # `enabled` is tenacity >= 9
            return wrapped(*args, **kwargs)
        run = self._start(instance, args[0] if args else kwargs.get("fn"), activates=True)
        if run is None:
            return wrapped(*args, **kwargs)
        return run_as_current(_RUN, run, wrapped, args, kwargs)

    def _async_call(
        self, wrapped: Callable[..., Awaitable[Any]], instance: AsyncRetrying, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Awaitable[Any]:
        if not getattr(instance, "enabled", True):  # `enabled` is tenacity >= 9
            return wrapped(*args, **kwargs)
        return self._async_call_traced(wrapped, instance, args, kwargs)

    async def _async_call_traced(
        self, wrapped: Callable[..., Awaitable[Any]], instance: AsyncRetrying, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        # Started when awaited, not when the coroutine was made: the awaiting task's context is the parent.
        run = self._start(instance, args[0] if args else kwargs.get("fn"), activates=True)
        if run is None:
            return await wrapped(*args, **kwargs)
        return await run_as_current_async(_RUN, run, wrapped, args, kwargs)


def _traced_attempts(attempts: Iterator[AttemptManager], run: TenacityLoop) -> Generator[AttemptManager, None, None]:
    """Drive tenacity's generator with our run visible to ``iter`` while it decides; yield its attempts unchanged."""
    registered = None  # the retry state this run is registered under (tenacity's loop keeps one throughout)
    try:
        while True:
            token = _RUN.set(run)
            try:
                manager = next(attempts)
                if manager.retry_state is not registered:
                    registered = manager.retry_state
                    _track(registered, run)
            except StopIteration:
                break
            finally:
                _RUN.reset(token)
            yield manager
    except GeneratorExit:
        attempts.close()  # type: ignore[attr-defined]
        run.ended_early()
        raise
    except BaseException as exc:
        run.ended(exc)
        raise
    run.ended(None)


async def _traced_anext(step: Awaitable[AttemptManager], run: TenacityLoop) -> AttemptManager:
    token = _RUN.set(run)
    try:
        return await step
    except StopAsyncIteration:
        run.ended(None)
        raise
    except BaseException as exc:
        run.ended(exc)
        raise
    finally:
        _RUN.reset(token)


async def _traced_async_iter(step: Awaitable[Any], run: TenacityLoop, retry_state: RetryCallState) -> Any:
    run.before_iter()
    try:
        do = await step
    except BaseException as exc:
        run.after_iter(retry_state, None, exc)
        raise
    run.after_iter(retry_state, do, None)
    return do
