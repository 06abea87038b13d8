"""An app's own retry helper, traced without editing it: each call of the helper is a retry operation, each call of
the callable it received is an attempt. The helper gets an `AttemptProxy` of that callable (``call`` style: for one
call; ``decorator`` style: at decoration, its operation found through a context variable), and a generator helper's
operation is its consumption (`otel_resilience.core.streams`). Nothing here knows the helper's policy, so the delay is
measured, ``retry.max_attempts`` is never set and the result is inferred; the styles and rules are in docs/targets.md."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import wrapt

from opentelemetry import context
from opentelemetry.context import Context

from otel_resilience.core import RetryOperation, Telemetry, never_raises
from otel_resilience.core.naming import callable_names
from otel_resilience.core.retry import ProxiedAttempts
from otel_resilience.core.streams import StreamAttempts
from otel_resilience.patching import Wrapper
from otel_resilience.targets._arguments import ArgumentLocator, Found, attemptable
from otel_resilience.targets.spec import Resolved, report_no_callable, stream_kind

T = TypeVar("T")


class AttemptProxy(wrapt.FunctionWrapper):  # type: ignore[misc]
    """The user's callable as the helper receives it: looks and introspects like it (name, signature, coroutine
    function or not); each call is an attempt of the operation its slot holds, if any."""


class OperationWrapper(wrapt.FunctionWrapper):  # type: ignore[misc]
    """What a decorator-style helper returned for one function: each call is one retry operation."""


_Running = RetryOperation | StreamAttempts
"""What a slot holds: an operation, or the consumption of a stream helper's result."""


class _Slot(Protocol):
    """Where an operation's attempts find it."""

    def current(self) -> _Running | None: ...

    def enter(self, op: _Running) -> object: ...

    def exit(self, token: object) -> None: ...


class _CallSlot:
    """One call of a ``call``-style helper: the proxy was made for this call alone, so it simply holds the operation
    (which also reaches attempts the helper runs in other threads)."""

    __slots__ = ("op",)

    def __init__(self) -> None:
        self.op: _Running | None = None

    def current(self) -> _Running | None:
        return self.op

    def enter(self, op: _Running) -> object:
        self.op = op
        return None

    def exit(self, token: object) -> None:
        """The operation ended: later calls of the proxy (a helper that kept it) pass straight through."""
        self.op = None


_ACTIVE: Final[ContextVar[tuple[tuple[_ContextSlot, _Running], ...]]] = ContextVar(
    "otel_resilience.targets.active_operations", default=()
)


class _ContextSlot:
    """One decorated function: its proxy is shared by every call, so each call's operation is published in the
    context those calls run in (innermost last, for a function that recurses)."""

    __slots__ = ()

    def current(self) -> _Running | None:
        for slot, op in reversed(_ACTIVE.get()):
            if slot is self:
                return op
        return None

    def enter(self, op: _Running) -> Token[tuple[tuple[_ContextSlot, _Running], ...]]:
        return _ACTIVE.set((*_ACTIVE.get(), (self, op)))

    def exit(self, token: object) -> None:
        _ACTIVE.reset(token)  # type: ignore[arg-type]


# --- attempts ------------------------------------------------------------------------------------------------------


class _AttemptScope:
    """The attempt span current while the attempt's code runs; the attempt ends with the scope (with the exception
    that left it, if any), unless `keep_open` says it goes on in a coroutine."""

    __slots__ = ("op", "token", "keep_open")

    def __init__(self, op: RetryOperation) -> None:
        self.op = op
        self.keep_open = False

    def __enter__(self) -> _AttemptScope:
        self.token = self.op.activate()
        return self

    def __exit__(self, _type: object, error: BaseException | None, _tb: object) -> None:
        self.op.deactivate(self.token)
        if error is not None or not self.keep_open:
            self.op.attempt_ended(error)


def _attempt_wrapper(slot: _Slot) -> Wrapper:
    def attempt(wrapped: Callable[..., Any], _instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        op = slot.current()
        if isinstance(op, StreamAttempts):
            return op.attempt(wrapped, args, kwargs)  # goes on while the stream it returns is read
        if op is None or op.is_ended:
            return wrapped(*args, **kwargs)
        op.attempt_started()
        with _AttemptScope(op) as scope:
            result = wrapped(*args, **kwargs)
            if inspect.iscoroutine(result):
                scope.keep_open = True
                return _awaited_attempt(op, result)  # the attempt lasts until the coroutine is done
        return result

    return attempt


async def _awaited_attempt(op: RetryOperation, coroutine: Awaitable[Any]) -> Any:
    with _AttemptScope(op):
        return await coroutine


# --- operations ----------------------------------------------------------------------------------------------------


class _OperationScope:
    """One retry operation, published in its slot while the helper runs; it ends with the scope, with the exception
    that escaped to the caller, if any. With nothing recording (or an internal error) it does nothing."""

    __slots__ = ("op", "slot", "token")

    def __init__(self, telemetry: Telemetry, names: tuple[str, str], slot: _Slot) -> None:
        self.op = _start(telemetry, names)
        self.slot = slot

    def __enter__(self) -> None:
        if self.op is not None:
            self.token = self.slot.enter(self.op)

    def __exit__(self, _type: object, error: BaseException | None, _tb: object) -> None:
        if self.op is not None:
            self.slot.exit(self.token)
            self.op.ended(error=error)


@never_raises
def _start(telemetry: Telemetry, names: tuple[str, str], parent: Context | None = None) -> RetryOperation | None:
    return RetryOperation.start(telemetry, names[0], span_name=names[1], parent=parent, measured_delays=True)


def _run(
    telemetry: Telemetry,
    names: tuple[str, str],
    slot: _Slot,
    call: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    with _OperationScope(telemetry, names, slot):
        return call(*args, **kwargs)


async def _run_async(
    telemetry: Telemetry, names: tuple[str, str], slot: _Slot, coroutine: Awaitable[Any]
) -> Any:
    """The operation of an async helper: from when its coroutine starts running until it is done."""
    with _OperationScope(telemetry, names, slot):
        return await coroutine


def _proxied(found: Found, args: tuple[Any, ...], kwargs: dict[str, Any], slot: _Slot) -> tuple[Any, ...]:
    """(names of the user's callable, args, kwargs with its proxy in its place)."""
    proxy = AttemptProxy(found.value, _attempt_wrapper(slot))
    return (callable_names(found.value), *found.replace(args, kwargs, proxy))


# --- stream helpers (generator and async generator functions) --------------------------------------------------------


class _TargetAttempts(ProxiedAttempts):
    """A stream helper's attempts. The helper tells us nothing, so its result follows the targets' rule (see the
    module's docstring) rather than a library's verdict."""

    __slots__ = ()

    @never_raises
    def ended(self, error: BaseException | None) -> None:
        self.attempt_ended()
        self.op.ended(None, error)


def _stream_operation(telemetry: Telemetry, names: tuple[str, str]) -> StreamAttempts:
    """The attempts of one consumption: parented where the helper was called, started when it is consumed."""
    parent = context.get_current()

    def start() -> ProxiedAttempts | None:
        op = _start(telemetry, names, parent)
        return None if op is None else _TargetAttempts(op)

    return StreamAttempts(start)


def _consumed(streams: StreamAttempts, kind: str | None, stream: Any) -> Any:
    """What the caller of a stream helper gets: the consumption of `stream`, as one operation."""
    return streams.consume_async(stream) if kind == "async" else streams.consume(stream)


class _Published:
    """A decorated stream helper's generator, run one step at a time with its consumption published in its slot
    (a generator's body runs in its consumer's context, at each step: the slot cannot be entered once for all)."""

    __slots__ = ("stream", "slot", "streams")

    def __init__(self, stream: Any, slot: _Slot, streams: StreamAttempts) -> None:
        self.stream = stream
        self.slot = slot
        self.streams = streams

    def _step(self, method: Callable[..., T], *args: Any) -> T:
        token = self.slot.enter(self.streams)
        try:
            return method(*args)
        finally:
            self.slot.exit(token)

    async def _step_async(self, method: Callable[..., Awaitable[T]], *args: Any) -> T:
        token = self.slot.enter(self.streams)
        try:
            return await method(*args)
        finally:
            self.slot.exit(token)


class _PublishedGenerator(_Published):
    __slots__ = ()

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        return self._step(self.stream.__next__)

    def send(self, value: Any) -> Any:
        return self._step(self.stream.send, value)

    def throw(self, *args: Any) -> Any:
        return self._step(self.stream.throw, *args)

    def close(self) -> None:
        self._step(self.stream.close)


class _PublishedAsyncGenerator(_Published):
    __slots__ = ()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        return await self._step_async(self.stream.__anext__)

    async def asend(self, value: Any) -> Any:
        return await self._step_async(self.stream.asend, value)

    async def athrow(self, *args: Any) -> Any:
        return await self._step_async(self.stream.athrow, *args)

    async def aclose(self) -> None:
        await self._step_async(self.stream.aclose)


# --- the call style --------------------------------------------------------------------------------------------------


class CallTarget:
    """The wrapper of a ``call``-style helper (patched with ``enabled=telemetry.recording``: with nothing recording
    it is not even called, and the helper receives the app's callable itself)."""

    __slots__ = ("telemetry", "target")

    def __init__(self, telemetry: Telemetry, target: Resolved) -> None:
        self.telemetry = telemetry
        self.target = target

    def __call__(self, wrapped: Callable[..., Any], _instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        planned = self._plan(args, kwargs)
        if planned is None:
            return wrapped(*args, **kwargs)
        slot, names, args, kwargs = planned
        if isinstance(slot.op, StreamAttempts):
            return _consumed(slot.op, self.target.streams, wrapped(*args, **kwargs))
        if self.target.is_async:
            return _run_async(self.telemetry, names, slot, wrapped(*args, **kwargs))
        return _run(self.telemetry, names, slot, wrapped, args, kwargs)

    @never_raises
    def _plan(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
        found = self.target.locator.find(args, kwargs)
        if found is None:
            report_no_callable(self.target)
            return None
        if isinstance(found.value, AttemptProxy):
            return None  # an outer helper of ours already traces it
        slot = _CallSlot()
        planned = (slot, *_proxied(found, args, kwargs, slot))
        if self.target.streams is not None:
            slot.op = _stream_operation(self.telemetry, planned[1])
        return planned


# --- the decorator style -------------------------------------------------------------------------------------------


def _decorated_function(wrapped: Any, argname: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Found | None:
    """The function being decorated, when this call is a decoration: the parameter `argname` when configured, else
    the sole positional argument when it is a callable that is not a class (``@retry`` and ``retry(fn, times=3)``;
    ``retry(times=3)`` and ``retry(ValueError)`` are factory calls)."""
    if argname is None:
        if len(args) == 1 and attemptable(args[0]):
            return Found(args[0], 0, None)
        return None
    try:
        parameters = list(inspect.signature(wrapped).parameters.values())
        return ArgumentLocator.for_parameters(parameters, argname).find(args, kwargs)
    except (TypeError, ValueError):
        return None


class DecoratorTarget:
    """The wrapper of a ``decorator``-style helper. A call that decorates a function gets an `AttemptProxy` of it
    and returns an `OperationWrapper`; any other call is a factory call, whose result (the decorator) is watched the
    same way, one level deep. Decorations are watched whether or not anything records yet (they happen at import,
    often before the app configures its SDK); each call of a decorated function then checks."""

    __slots__ = ("telemetry", "argname")

    def __init__(self, telemetry: Telemetry, target: Resolved) -> None:
        self.telemetry = telemetry
        self.argname = target.spec.argname

    def __call__(self, wrapped: Callable[..., Any], _instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call of the helper itself: a decoration, or a factory call whose result is watched."""
        return self._decorate(wrapped, args, kwargs, watch_result=True)

    def decorator_called(self, wrapped: Callable[..., Any], _instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call of the decorator a factory call returned."""
        return self._decorate(wrapped, args, kwargs, watch_result=False)

    def _decorate(self, wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *, watch_result: bool) -> Any:
        planned = self._plan(wrapped, args, kwargs)
        if planned is None:
            result = wrapped(*args, **kwargs)
            watched = self._watched(result) if watch_result else None
            return result if watched is None else watched
        slot, names, args, kwargs = planned
        decorated = wrapped(*args, **kwargs)
        traced = self._traced(decorated, slot, names)
        return decorated if traced is None else traced

    @never_raises
    def _plan(self, wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
        if self.telemetry.disabled:
            return None
        found = _decorated_function(wrapped, self.argname, args, kwargs)
        if found is None or isinstance(found.value, AttemptProxy):
            return None
        slot = _ContextSlot()
        return (slot, *_proxied(found, args, kwargs, slot))

    @never_raises
    def _watched(self, result: Any) -> Any:
        if not attemptable(result) or isinstance(result, (AttemptProxy, OperationWrapper)) or self.telemetry.disabled:
            return result
        return wrapt.FunctionWrapper(result, self.decorator_called)

    @never_raises
    def _traced(self, decorated: Any, slot: _Slot, names: tuple[str, str]) -> Any:
        if not attemptable(decorated) or isinstance(decorated, OperationWrapper):
            return decorated
        operation = _DecoratedOperation(
            self.telemetry, names, slot, inspect.iscoroutinefunction(decorated), stream_kind(decorated)
        )
        return OperationWrapper(decorated, operation)


@dataclass(slots=True, eq=False)
class _DecoratedOperation:
    """The wrapper of a decorated function: each call is one retry operation (for a generator or async generator
    function, the consumption of what the call returned)."""

    telemetry: Telemetry
    names: tuple[str, str]
    slot: _Slot
    is_async: bool
    streams: str | None

    def __call__(self, wrapped: Callable[..., Any], _instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self.telemetry.records():
            return wrapped(*args, **kwargs)
        if self.streams is not None:
            streams = _stream_operation(self.telemetry, self.names)
            published = _PublishedAsyncGenerator if self.streams == "async" else _PublishedGenerator
            return _consumed(streams, self.streams, published(wrapped(*args, **kwargs), self.slot, streams))
        if self.is_async:
            return _run_async(self.telemetry, self.names, self.slot, wrapped(*args, **kwargs))
        return _run(self.telemetry, self.names, self.slot, wrapped, args, kwargs)
