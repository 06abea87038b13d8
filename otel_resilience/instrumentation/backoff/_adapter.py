"""Translate backoff's retry loop into core retry events.

backoff builds its loop as a closure at decoration time. Decorated after instrumentation (`_decorated`): its four
factories are patched and also build the closure around a stand-in for the app's function, so each attempt is seen
exactly and is current while it runs. Decorated before (`_undecorated`): the closure's call-time lookups of
``_init_wait_gen`` (the loop begins), ``_next_wait`` (the wait backoff chose) and ``_call_handlers`` (success, give-up,
backoff) rebuild the attempts, with the limits docs/retry-libraries.md lists. No handler of ours is added; handlers see the app's function as ``target``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from types import CodeType
from typing import Any

from backoff import _async, _sync

from otel_resilience.core import Telemetry, report_internal_error
from otel_resilience.core.bracket import await_then_end, call_then_end
from otel_resilience.instrumentation.backoff._calls import FACTORIES, Call
from otel_resilience.instrumentation.backoff._decorated import DECORATED, STAND_IN_CODES, Active, decorate
from otel_resilience.instrumentation.backoff._undecorated import (
    UNDECORATED,
    TracedWait,
    begin_undecorated,
    closure_codes,
    closure_frame,
)
from otel_resilience.patching import Patches


class BackoffAdapter:
    """Holds the Telemetry for backoff and installs the hooks."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self._closure_codes: frozenset[CodeType] = frozenset()

    def patch(self, patches: Patches) -> None:
        """The factories; deferred until something records: the call-time hooks (with no SDK a decorated function
        runs backoff's own closure, and those hooks would only cost)."""
        self._closure_codes = frozenset(closure_codes(_sync) | closure_codes(_async))
        for module, is_async in ((_sync, False), (_async, True)):
            for factory in FACTORIES:
                patches.wrap(module, factory, functools.partial(self._decorate, is_async=is_async))
        for module in (_sync, _async):
            patches.wrap(module, "_init_wait_gen", self._loop_begins, enabled=self.telemetry.recording, deferred=True)
            patches.wrap(module, "_next_wait", self._next_wait, deferred=True)
        patches.wrap(_sync, "_call_handlers", self._handlers, deferred=True)
        patches.wrap(_async, "_call_handlers", self._handlers_async, deferred=True)
        Active.telemetry = self.telemetry

    def _decorate(
        self, wrapped: Callable[..., Any], instance: None, args: tuple[Any, ...], kwargs: dict[str, Any], *, is_async: bool
    ) -> Callable[..., Any]:
        return decorate(wrapped, args, kwargs, is_async=is_async)

    # --- call-time hooks -------------------------------------------------------------------------------------------

    def _loop_begins(self, wrapped: Callable[..., Any], instance: None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        wait = wrapped(*args, **kwargs)
        call = DECORATED.get()
        if call is not None and not call.claimed:
            call.claimed = True
            policy = call.policy
            limits_are_callables = callable(policy.max_tries) or callable(policy.max_time)
            call.begin(self.telemetry, wait, closure_frame(self._closure_codes) if limits_are_callables else None)
            return wait
        traced = begin_undecorated(self.telemetry, wait, self._closure_codes)
        return wait if traced is None else traced

    def _next_wait(self, wrapped: Callable[..., Any], instance: None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        wait = args[0]
        call: Call | None
        if type(wait) is TracedWait:
            call = wait.call
            args = (wait.generator, *args[1:])
        else:
            call = DECORATED.get()
            if call is None or call.wait is not wait:  # type: ignore[union-attr]
                return wrapped(*args, **kwargs)
        try:
            seconds = wrapped(*args, **kwargs)
        except StopIteration:
            call.ran_out(args[1], args[3])
            raise
        except BaseException as exc:
            call.wait_failed(exc)
            raise
        call.retried(args[1], args[3], seconds)
        return seconds

    def _handlers(self, wrapped: Callable[..., Any], instance: None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        routed = _route(args, kwargs)
        call, kind = routed
        if call is None:
            return wrapped(*args, **kwargs)
        call.before_handlers(kind, kwargs)
        return call_then_end(_after_handlers, routed, wrapped, args, kwargs)

    def _handlers_async(
        self, wrapped: Callable[..., Awaitable[Any]], instance: None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Awaitable[Any]:
        routed = _route(args, kwargs)
        if routed[0] is None:
            return wrapped(*args, **kwargs)
        return _run_async_handlers(wrapped, args, kwargs, routed)


async def _run_async_handlers(
    wrapped: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any], routed: tuple[Call, str | None]
) -> Any:
    call, kind = routed
    call.before_handlers(kind, kwargs)
    return await await_then_end(_after_handlers, routed, wrapped, args, kwargs)


def _after_handlers(routed: tuple[Call, str | None], value: Any, error: BaseException | None) -> None:
    call, kind = routed
    call.after_handlers(kind, error)


def _route(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Call | None, str | None]:
    """The call whose handlers are about to run, and which handlers; puts the app's function back in place of our
    stand-in in what the handlers receive."""
    try:
        return _find_call(args, kwargs)
    except Exception:
        report_internal_error("backoff handlers hook")
        return None, None


def _find_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Call | None, str | None]:
    target = kwargs.get("target")
    if getattr(target, "__code__", None) in STAND_IN_CODES:
        kwargs["target"] = target.__wrapped__  # type: ignore[union-attr]
        call: Call | None = DECORATED.get()
        if call is None or call.policy.stand_in is not target or call.attempts is None:  # type: ignore[attr-defined]
            return None, None
    elif UNDECORATED:
        call = UNDECORATED.get(id(kwargs.get("kwargs")))
        if call is None or call.policy.target is not target:
            return None, None
    else:
        return None, None
    return call, call.policy.handlers_kind(args[0] if args else None)
