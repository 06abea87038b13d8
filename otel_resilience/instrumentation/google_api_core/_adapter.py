"""Translate google-api-core's retry loops into core retry events. Every retry of google-api-core runs in one of four
loop functions that the library looks up by module global at call time, so patching those names (and the package's
re-exports) covers retry objects, decorated functions and generated clients made before instrumenting. Each loop gets
stand-ins for ``target`` (the attempts), ``sleep_generator`` (the library's own waits, never recomputed) and
``exception_factory`` (why it gave up); a generated client's ``_GapicCallable.__call__`` names the loop by its RPC.
What is covered, the result rules and naming: docs/retry-engines.md, "google-api-core"."""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any, Final

from google.api_core.retry import RetryFailureReason
from google.api_core.retry import retry_base, retry_streaming, retry_streaming_async, retry_unary, retry_unary_async
from opentelemetry import context

from otel_resilience import semconv
from otel_resilience.core import Telemetry, never_raises
from otel_resilience.core.bracket import await_then_end, call_then_end
from otel_resilience.core.naming import callable_names
from otel_resilience.core.retry import ProxiedAttempts, RetryOperation
from otel_resilience.patching import Patches
from otel_resilience.core.streams import StreamAttempts

_TARGET, _SLEEP_GENERATOR, _EXCEPTION_FACTORY = 0, 2, 5
"""Positions of the stand-ins' arguments, the same in all four loop functions."""
_DRAWN_FIRST: Final = "next_sleep" in inspect.signature(retry_base._retry_error_helper).parameters
"""Whether this version draws each wait before the attempt it follows (its error helper is handed the value)."""


# --- which RPC a generated client is calling ------------------------------------------------------------------------------


_RPC: contextvars.ContextVar[Any] = contextvars.ContextVar("otel_resilience_google_rpc", default=None)
"""The generated client's method (``_GapicCallable``) being called, if any."""


def rpc_names(gapic: Any) -> tuple[str, str]:
    """(``retry.name``, span name) of a generated client's method: the RPC's full name
    (``google.pubsub.v1.Publisher/Publish``) and ``Service/Method``, from the name the client passed for its own
    tracing, else the gRPC stub's method path; else the transport function's names."""
    full: str | None = None
    start_span = getattr(gapic, "_start_span_fn", None)
    if isinstance(start_span, functools.partial) and start_span.args and isinstance(start_span.args[0], str):
        full = start_span.args[0]
    target = inspect.unwrap(gapic._target)
    if full is None:
        path = getattr(target, "_method", None)
        if isinstance(path, bytes):
            path = path.decode("utf-8", "replace")
        if isinstance(path, str) and "/" in path:
            full = path.lstrip("/")
    if full is None:
        return callable_names(target)
    service, _, method = full.rpartition("/")
    return full, f"{service.rpartition('.')[2]}/{method}" if service else method


def _innermost(fn: Any) -> Any:
    """What a loop's target finally calls: through ``functools.partial`` and ``functools.wraps`` layers."""
    return inspect.unwrap(fn.func if isinstance(fn, functools.partial) else fn)


def _loop_names(target: Any) -> tuple[str, str]:
    """Named by the RPC when the loop is the one a generated client's method started around its transport call
    (a retry inside that call, or in a method called with ``retry=None``, keeps its own name)."""
    gapic = _RPC.get()
    if gapic is not None and _innermost(target) is _innermost(gapic._target):
        return rpc_names(gapic)
    return callable_names(target)


# --- the library's decisions ------------------------------------------------------------------------------------------------


class _Holder:
    """Where the stand-ins find the attempts of their loop (a stream's exist only once consumption starts)."""

    __slots__ = ("attempts",)

    def __init__(self, attempts: ProxiedAttempts | None) -> None:
        self.attempts = attempts


class _DrawnWaits:
    """The loop's sleep generator: the same values, each noted as the wait chosen after the attempt that failed.

    Older versions (2.16.0 among them) draw the wait for an attempt before making it (``for sleep in sleep_generator:``), later ones
    after it failed: with `drawn_first`, a value is the failed attempt's wait only once the next one is drawn (the
    loop went on after sleeping it)."""

    __slots__ = ("_holder", "_source", "_iterator", "_drawn_first", "_previous")

    def __init__(self, holder: _Holder | StreamAttempts, source: Iterable[float], drawn_first: bool) -> None:
        self._holder = holder
        self._source = source
        self._drawn_first = drawn_first
        self._previous: Any = None

    def __iter__(self) -> Iterator[float]:
        self._iterator = iter(self._source)
        return self

    def __next__(self) -> float:
        delay = next(self._iterator)
        if not self._drawn_first:
            _drawn(self._holder.attempts, delay)
        elif self._previous is not None:
            _drawn(self._holder.attempts, self._previous)
        self._previous = delay
        return delay


@never_raises
def _drawn(attempts: ProxiedAttempts | None, delay: Any) -> None:
    if attempts is not None:
        attempts.pending_delay = float(delay)


def _recorded_factory(holder: _Holder | StreamAttempts, factory: Callable[..., Any]) -> Callable[..., Any]:
    def exception_factory(*args: Any, **kwargs: Any) -> Any:
        _gave_up(holder.attempts, args[1] if len(args) > 1 else kwargs.get("reason"))
        return factory(*args, **kwargs)

    return exception_factory


@never_raises
def _gave_up(attempts: ProxiedAttempts | None, reason: Any) -> None:
    if attempts is None:
        return
    attempts.pending_delay = None  # drawn, but the deadline stopped it: the last attempt has no delay
    if reason == RetryFailureReason.TIMEOUT:
        attempts.verdict = semconv.RESULT_EXHAUSTED
        attempts.attributes = {semconv.RETRY_STOP_REASON: semconv.STOP_REASON_TIMEOUT}
    elif reason == RetryFailureReason.NON_RETRYABLE_ERROR:
        attempts.verdict = semconv.RESULT_NOT_RETRIED


def _loop_ended(attempts: ProxiedAttempts, value: Any, error: BaseException | None) -> None:
    attempts.ended(error)


# --- the adapter ------------------------------------------------------------------------------------------------------------


class GoogleApiCoreAdapter:
    """Holds the Telemetry for google-api-core and installs the hooks."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch(self, patches: Patches) -> None:
        import google.api_core.retry as retry_package

        packages: list[ModuleType] = [retry_package]
        try:  # the legacy module name for AsyncRetry, back in later 2.x versions
            import google.api_core.retry_async as retry_async_package
        except ImportError:
            pass
        else:
            packages.append(retry_async_package)
        recording = self.telemetry.recording
        loops: list[tuple[ModuleType, str, Callable[..., Any]]] = [
            (retry_unary, "retry_target", self._unary),
            (retry_unary_async, "retry_target", self._unary_async),
            (retry_streaming, "retry_target_stream", self._stream),
            (retry_streaming_async, "retry_target_stream", self._stream_async),
        ]
        wrapper_of = {id(vars(module)[name]): wrapper for module, name, wrapper in loops}
        for module, name, wrapper in loops:
            patches.wrap(module, name, wrapper, enabled=recording)
        for package in packages:  # the re-exports, found by identity
            for alias, value in list(vars(package).items()):
                wrapper = wrapper_of.get(id(value))
                if wrapper is not None:
                    patches.wrap(package, alias, wrapper, enabled=recording)
        try:
            from google.api_core.gapic_v1 import method as gapic_method
            from google.api_core.gapic_v1 import method_async as gapic_method_async
        except ImportError:  # generated clients need grpcio, an optional extra of google-api-core
            return
        patches.wrap(gapic_method._GapicCallable, "__call__", self._gapic_call, enabled=recording)
        # Its own class only in recent versions; before, async methods were _GapicCallables whose loop ran after
        # __call__ returned (named by the wrapped function then).
        async_gapic = getattr(gapic_method_async, "_AsyncGapicCallable", None)
        if async_gapic is not None and "__call__" in vars(async_gapic):
            patches.wrap(async_gapic, "__call__", self._gapic_call_async, enabled=recording)

    # --- generated clients: which RPC ----------------------------------------------------------------------------

    @staticmethod
    def _gapic_call(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        token = _RPC.set(instance)
        try:
            return wrapped(*args, **kwargs)
        finally:
            _RPC.reset(token)

    @staticmethod
    async def _gapic_call_async(
        wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        token = _RPC.set(instance)
        try:
            return await wrapped(*args, **kwargs)
        finally:
            _RPC.reset(token)

    # --- the loops ------------------------------------------------------------------------------------------------

    @never_raises
    def _start(self, target: Any, parent: context.Context | None = None) -> ProxiedAttempts | None:
        name, span_name = _loop_names(target)
        op = RetryOperation.start(self.telemetry, name, span_name=span_name, parent=parent)
        return None if op is None else ProxiedAttempts(op)

    def _unary(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        target = _argument(args, kwargs, _TARGET, "target")
        attempts = self._start(target) if target is not None else None
        if attempts is None:
            return wrapped(*args, **kwargs)

        def attempt() -> Any:
            return attempts.run(target, (), {})

        args, kwargs = _stand_ins(wrapped, args, kwargs, attempt, _Holder(attempts))
        return call_then_end(_loop_ended, attempts, wrapped, args, kwargs)

    async def _unary_async(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        target = _argument(args, kwargs, _TARGET, "target")
        attempts = self._start(target) if target is not None else None
        if attempts is None:
            return await wrapped(*args, **kwargs)

        def attempt() -> Any:
            return attempts.run_async(target, (), {})

        args, kwargs = _stand_ins(wrapped, args, kwargs, attempt, _Holder(attempts))
        return await await_then_end(_loop_ended, attempts, wrapped, args, kwargs)

    # The sync and async stream loops are twins kept side by side: they differ in the opener and the consumption.
    def _stream(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        target = _argument(args, kwargs, _TARGET, "target")
        streams = self._streams(target)
        if streams is None:
            return wrapped(*args, **kwargs)
        args, kwargs = _stand_ins(wrapped, args, kwargs, streams.opener(target), streams)
        return streams.consume(wrapped(*args, **kwargs))

    def _stream_async(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        target = _argument(args, kwargs, _TARGET, "target")
        streams = self._streams(target)
        if streams is None:
            return wrapped(*args, **kwargs)
        args, kwargs = _stand_ins(wrapped, args, kwargs, streams.opener_async(target), streams)
        return streams.consume_async(wrapped(*args, **kwargs))

    @never_raises
    def _streams(self, target: Any) -> StreamAttempts | None:
        """The stream is named and parented where it was asked for; its operation starts when it is consumed."""
        if target is None:
            return None
        names = _loop_names(target)
        parent = context.get_current()

        def start() -> ProxiedAttempts | None:
            op = RetryOperation.start(self.telemetry, names[0], span_name=names[1], parent=parent)
            return None if op is None else ProxiedAttempts(op)

        return StreamAttempts(start)


def _argument(args: tuple[Any, ...], kwargs: dict[str, Any], position: int, name: str) -> Any:
    return args[position] if len(args) > position else kwargs.get(name)


_FACTORY_DEFAULTS: dict[int, Any] = {}


def _default_factory(loop: Callable[..., Any]) -> Any:
    """The loop function's own default ``exception_factory`` (read once from its signature)."""
    key = id(loop)
    if key not in _FACTORY_DEFAULTS:
        _FACTORY_DEFAULTS[key] = inspect.signature(loop).parameters["exception_factory"].default
    return _FACTORY_DEFAULTS[key]


def _stand_ins(
    loop: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    target: Callable[..., Any],
    holder: _Holder | StreamAttempts,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The loop's arguments with our stand-ins for ``target``, ``sleep_generator`` and ``exception_factory`` (in
    the places the caller put them; a factory left out is the loop's own default, wrapped)."""
    positional = list(args)
    kwargs = dict(kwargs)

    def replace(position: int, name: str, make: Callable[[Any], Any], default: Any = None) -> None:
        if len(positional) > position:
            positional[position] = make(positional[position])
        elif name in kwargs:
            kwargs[name] = make(kwargs[name])
        elif default is not None:
            kwargs[name] = make(default)

    replace(_TARGET, "target", lambda _: target)
    replace(_SLEEP_GENERATOR, "sleep_generator", lambda source: _DrawnWaits(holder, source, _DRAWN_FIRST))
    factory_default = _default_factory(getattr(loop, "__func__", loop))
    replace(
        _EXCEPTION_FACTORY,
        "exception_factory",
        lambda factory: _recorded_factory(holder, factory) if callable(factory) else factory,
        factory_default,
    )
    return tuple(positional), kwargs
