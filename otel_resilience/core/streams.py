"""Retried streams: the operation is the consumption, each stream (re-)opened is an attempt. A loop that re-opens a
stream (google-api-core's streaming retries, an app's generator helper named as a target) yields items long after
its attempted callable returned, so attempts and operation cannot end at a call's return; `StreamAttempts` brackets
them by the iteration instead, handing the library and consumer the same items, exceptions, sends, throws and close.
The semantics and the forwarding rules are in docs/core.md, "Retried streams". Usage (async: `opener_async`,
`consume_async`; a target's helper: `attempt`)::

    streams = StreamAttempts(start)          # start() -> ProxiedAttempts | None, called at the first item
    stream = library_loop(streams.opener(open_stream), ...)   # the library's generator, as it was made
    return streams.consume(stream)           # what the caller iterates instead
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Generator, Iterable
from typing import Any

from otel_resilience.core._safety import never_raises
from otel_resilience.core.retry import ProxiedAttempts


@never_raises
def _activate(attempts: ProxiedAttempts) -> object:
    return attempts.op.activate()


@never_raises
def _deactivate(attempts: ProxiedAttempts, token: object) -> None:
    if token is not None:
        attempts.op.deactivate(token)


def _open(attempts: ProxiedAttempts, open_stream: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """An attempt starts with the opener's call (current while it runs) and goes on while its stream is used."""
    token = attempts.attempt_started()
    try:
        stream = open_stream(*args, **kwargs)
    except BaseException as exc:
        attempts.attempt_returned(token, exc)
        raise
    _deactivate(attempts, token)
    return stream


@never_raises
def _closed_early(attempts: ProxiedAttempts) -> None:
    """The consumer closed the stream before its end: the attempt in flight ends now, and nothing failed."""
    if attempts.op.in_attempt and not attempts.returned:
        attempts.attempt_returned(None, None)
    attempts.ended(None)


class StreamAttempts:
    """The attempts of one retried stream consumption. `start` makes the operation when consumption begins (None:
    nothing records; the stream is then passed through untouched)."""

    __slots__ = ("_start", "attempts")

    def __init__(self, start: Callable[[], ProxiedAttempts | None]) -> None:
        self._start = start
        self.attempts: ProxiedAttempts | None = None

    # --- attempts: the opener's stand-in -------------------------------------------------------------------------------

    def opener(self, open_stream: Callable[..., Any]) -> Callable[..., Any]:
        """A stand-in for `open_stream` (the attempted callable, which returns an iterable): each call is an
        attempt, and the stream it returns is observed."""

        def open_attempt(*args: Any, **kwargs: Any) -> Any:
            attempts = self.attempts
            if attempts is None:
                return open_stream(*args, **kwargs)
            return _AttemptIterable(attempts, _open(attempts, open_stream, args, kwargs))

        return open_attempt

    def opener_async(self, open_stream: Callable[..., Any]) -> Callable[..., Any]:
        """`opener` for async streams: `open_stream` returns an async iterable, or an awaitable of one (both as
        before: an awaitable is handed back as a coroutine that awaits it, anything else stays not awaitable)."""

        def open_attempt(*args: Any, **kwargs: Any) -> Any:
            attempts = self.attempts
            if attempts is None:
                return open_stream(*args, **kwargs)
            stream = _open(attempts, open_stream, args, kwargs)
            if inspect.isawaitable(stream):
                return _opened(attempts, stream, _AttemptAsyncIterable)
            return _AttemptAsyncIterable(attempts, stream)

        return open_attempt

    def attempt(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One call of an attempted callable that may or may not return a stream (a drop-in target's helper does
        what it likes with the result). An iterator or async iterator it returns, or that its awaitable gives, is
        handed back as an iterator of the same kind whose steps are the attempt's; anything else (a value, a list,
        an iterator that is also a context manager, such as a file, which a stand-in could not replace in a
        ``with``) is handed back as it is, and the attempt ended when the call returned. Once the operation is
        over (a helper that kept the callable), calls pass straight through."""
        attempts = self.attempts
        if attempts is None or attempts.op.is_ended:
            return fn(*args, **kwargs)
        result = _open(attempts, fn, args, kwargs)
        if inspect.isawaitable(result) and _stream_steps(result) is None:
            return _opened(attempts, result, _observed)
        return _observed(attempts, result)

    # --- the operation: the consumption ----------------------------------------------------------------------------------

    def consume(self, stream: Iterable[Any]) -> Generator[Any, Any, Any]:
        """The loop's generator as the consumer sees it: the same items, sends, throws and close (``yield from``),
        bracketed by the operation."""
        attempts = self.attempts = self._begin_operation()
        if attempts is None:
            return (yield from stream)
        try:
            value = yield from stream
        except GeneratorExit:
            _closed_early(attempts)
            raise
        except BaseException as exc:
            attempts.ended(exc)
            raise
        attempts.ended(None)
        return value

    async def consume_async(self, stream: AsyncIterable[Any]) -> AsyncGenerator[Any, Any]:
        """`consume` for an async loop (async generators have no ``yield from``: ``asend``, ``athrow`` and
        ``aclose`` are forwarded one by one; an exception is re-raised outside the handler that caught it, so that
        its ``__context__`` stays as the loop left it)."""
        attempts = self.attempts = self._begin_operation()
        iterator = stream.__aiter__()
        asend = getattr(iterator, "asend", None)
        athrow = getattr(iterator, "athrow", None)
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            try:
                if thrown is not None:
                    if athrow is None:
                        raise thrown
                    item = await athrow(thrown)
                elif asend is not None:
                    item = await asend(sent)
                else:
                    item = await iterator.__anext__()
            except StopAsyncIteration:
                if attempts is not None:
                    attempts.ended(None)
                return
            except BaseException as exc:
                if attempts is not None:
                    attempts.ended(exc)
                raise
            thrown = None
            try:
                sent = yield item
            except GeneratorExit:
                aclose = getattr(iterator, "aclose", None)
                try:
                    if aclose is not None:
                        await aclose()
                finally:
                    if attempts is not None:
                        _closed_early(attempts)
                raise
            except BaseException as exc:  # thrown in by the consumer: the loop decides what it means
                thrown = exc

    @never_raises
    def _begin_operation(self) -> ProxiedAttempts | None:
        return self._start()


# --- the streams an opener returned -------------------------------------------------------------------------------------


class _Forwarding:
    """Every attribute not about iteration is the stream's own."""

    __slots__ = ("_attempts", "_stream")

    def __init__(self, attempts: ProxiedAttempts, stream: Any) -> None:
        self._attempts = attempts
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        if name in _Forwarding.__slots__:  # not set yet (an object made without __init__, as copy does)
            raise AttributeError(name)
        return getattr(self._stream, name)


class _AttemptIterable(_Forwarding):
    __slots__ = ()

    def __iter__(self) -> _Steps:
        return _steps(self._attempts, iter(self._stream))


class _Steps(_Forwarding):
    """Each step runs with the attempt current; the end of the stream or an error ends the attempt."""

    __slots__ = ()

    def __iter__(self) -> _Steps:
        return self

    def __next__(self) -> Any:
        return self._step(self._stream.__next__, ())

    def _step(self, method: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        attempts = self._attempts
        token = _activate(attempts)
        try:
            item = method(*args)
        except BaseException as exc:
            attempts.attempt_returned(token, None if isinstance(exc, StopIteration) else exc)
            raise
        _deactivate(attempts, token)
        return item


class _GeneratorSteps(_Steps):
    __slots__ = ()

    def send(self, value: Any) -> Any:
        return self._step(self._stream.send, (value,))

    def throw(self, *args: Any) -> Any:
        return self._step(self._stream.throw, args)

    def close(self) -> None:
        self._stream.close()


async def _opened(
    attempts: ProxiedAttempts, awaitable: Awaitable[Any], observe: Callable[[ProxiedAttempts, Any], Any]
) -> Any:
    """An opener's awaitable, awaited as part of its attempt; `observe` makes what it gave the attempt's."""
    token = _activate(attempts)
    try:
        stream = await awaitable
    except BaseException as exc:
        attempts.attempt_returned(token, exc)
        raise
    _deactivate(attempts, token)
    return observe(attempts, stream)


class _AttemptAsyncIterable(_Forwarding):
    __slots__ = ()

    def __aiter__(self) -> _AsyncSteps:
        return _async_steps(self._attempts, self._stream.__aiter__())


# The async steps are the sync ones' twin, kept side by side: the same bracket around an awaited step.
class _AsyncSteps(_Forwarding):
    __slots__ = ()

    def __aiter__(self) -> _AsyncSteps:
        return self

    async def __anext__(self) -> Any:
        return await self._step(self._stream.__anext__, ())

    async def _step(self, method: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> Any:
        attempts = self._attempts
        token = _activate(attempts)
        try:
            item = await method(*args)
        except BaseException as exc:
            attempts.attempt_returned(token, None if isinstance(exc, StopAsyncIteration) else exc)
            raise
        _deactivate(attempts, token)
        return item


class _AsyncGeneratorSteps(_AsyncSteps):
    __slots__ = ()

    async def asend(self, value: Any) -> Any:
        return await self._step(self._stream.asend, (value,))

    async def athrow(self, *args: Any) -> Any:
        return await self._step(self._stream.athrow, args)

    async def aclose(self) -> None:
        await self._stream.aclose()


def _steps(attempts: ProxiedAttempts, iterator: Any) -> _Steps:
    kind = _GeneratorSteps if hasattr(iterator, "send") and hasattr(iterator, "throw") else _Steps
    return kind(attempts, iterator)


def _async_steps(attempts: ProxiedAttempts, iterator: Any) -> _AsyncSteps:
    has_generator_methods = all(hasattr(iterator, name) for name in ("asend", "athrow", "aclose"))
    return (_AsyncGeneratorSteps if has_generator_methods else _AsyncSteps)(attempts, iterator)


def _stream_steps(value: Any) -> Callable[[ProxiedAttempts, Any], Any] | None:
    """How to observe `value` as an iterator of the same kind, or None when it is not one we can stand in for."""
    kind = type(value)
    if hasattr(kind, "__anext__") and hasattr(kind, "__aiter__") and not hasattr(kind, "__aenter__"):
        return _async_steps
    if hasattr(kind, "__next__") and hasattr(kind, "__iter__") and not hasattr(kind, "__enter__"):
        return _steps
    return None


def _observed(attempts: ProxiedAttempts, value: Any) -> Any:
    """What an attempted callable returned, as its attempt's: a stream goes on being the attempt; anything else
    ends it now."""
    steps = _stream_steps(value)
    if steps is None:
        attempts.attempt_returned(None, None)
        return value
    return steps(attempts, value)


__all__ = ["StreamAttempts"]
