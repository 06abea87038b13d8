"""Call the library's function, then report how it ended: the one bracket that hooks around a library call share, so
that each hook says only what it starts and what it reports. It adds a Python call: on the paths with benchmark
targets (breaker calls, HTTP and tenacity attempts) it stands only where it replaces another layer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

S = TypeVar("S")
End = Callable[[S, Any, "BaseException | None"], object]
"""``end(state, value, error)``: `value` is what the call returned (None when it raised), `error` what it raised."""


def call_then_end(
    end: End[S], state: S | None, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``fn(*args, **kwargs)``, then ``end(state, value, error)``; returns the value or re-raises the very exception.
    A `state` of None (nothing observed) is the plain call. `end` must not raise: it guards its own work, and the
    core's entry points it calls guard themselves."""
    if state is None:
        return fn(*args, **kwargs)
    try:
        value = fn(*args, **kwargs)
    except BaseException as exc:
        end(state, None, exc)
        raise
    end(state, value, None)
    return value


# The async bracket is the sync one's twin, kept beside it: the same bracket, awaited.
async def await_then_end(
    end: End[S], state: S | None, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """`call_then_end` for a coroutine function."""
    if state is None:
        return await fn(*args, **kwargs)
    try:
        value = await fn(*args, **kwargs)
    except BaseException as exc:
        end(state, None, exc)
        raise
    end(state, value, None)
    return value


def bracketing(
    start: Callable[[Any, tuple[Any, ...], dict[str, Any]], S | None], end: End[S]
) -> tuple[Callable[..., Any], Callable[..., Awaitable[Any]]]:
    """The patch wrappers, sync and async, of a library method bracketed by ``start(instance, args, kwargs)`` (None:
    nothing to observe) and `end`: for an adapter that hooks one method of a sync and an async class alike."""

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return call_then_end(end, start(instance, args, kwargs), wrapped, args, kwargs)

    async def async_wrapper(
        wrapped: Callable[..., Awaitable[Any]], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        return await await_then_end(end, start(instance, args, kwargs), wrapped, args, kwargs)

    return wrapper, async_wrapper
