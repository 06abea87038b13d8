"""Translate redis-py's ``Retry.call_with_retry`` into core retry events, at no span's cost for a first-try success.
Every redis command, connect and health check runs in ``call_with_retry``, and commands are hot and nearly always
succeed at once; so its stand-ins for ``do`` and ``fail`` record nothing until redis first calls ``fail``, which
starts the operation back-dated to the loop's entry. The waits are read from the policy's backoff ``compute()``, never
recomputed. Coverage, naming, results and why our spans hang under contrib's: docs/retry-engines.md, "redis-py"."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from time import time_ns
from typing import Any, Final

from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import AbstractBackoff
from redis.retry import Retry

from otel_resilience import semconv
from otel_resilience.core import Telemetry, never_raises
from otel_resilience.core.retry import ProxiedAttempts, RetryOperation
from otel_resilience.patching import Patches

_NAME_PREFIX: Final = "redis"
_LOOPS: Final = {
    "_connect": "connect",
    "connect": "connect",
    "connect_check_health": "connect",
    "_send_ping": "health_check",
    "_execute_pipeline": "pipeline",
    "_execute_transaction": "transaction",
}
"""What a loop that runs no single command is named by, from the method it runs."""


def loop_name(do: Any) -> str:
    """The command a ``call_with_retry`` loop runs (``GET``), else a name for what it runs (``connect``)."""
    code = getattr(do, "__code__", None)
    closure = getattr(do, "__closure__", None)
    if code is not None and closure:
        cells = dict(zip(code.co_freevars, closure, strict=True))
        command = _cell(cells, "command_name")
        if isinstance(command, (str, bytes)):
            return _text(command)
        args = _cell(cells, "args")
        if isinstance(args, tuple) and args and isinstance(args[0], (str, bytes)):
            return _text(args[0])
        for free in ("execute", "command"):
            runs = _cell(cells, free)
            if runs is not None:
                return _method_name(getattr(runs, "__name__", free))
    if code is not None and code.co_name == "<lambda>" and code.co_names:
        return _method_name(code.co_names[-1])
    return _method_name(getattr(do, "__name__", type(do).__name__))


def _cell(cells: dict[str, Any], name: str) -> Any:
    cell = cells.get(name)
    try:
        return None if cell is None else cell.cell_contents
    except ValueError:  # an empty cell
        return None


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _method_name(name: str) -> str:
    return _LOOPS.get(name) or name.lstrip("_")


class _RedisCall:
    """One ``call_with_retry`` in flight. Until its first failure it is three fields and two bound methods."""

    __slots__ = ("adapter", "retry", "do", "fail_handler", "start_ns", "attempts", "failures", "token")

    def __init__(self, adapter: RedisAdapter, retry: Any, do: Callable[[], Any], fail: Callable[..., Any]) -> None:
        self.adapter = adapter
        self.retry = retry
        self.do = do
        self.fail_handler = fail
        self.start_ns = time_ns()
        self.attempts: ProxiedAttempts | None = None
        self.failures = 0

    # --- the stand-ins ----------------------------------------------------------------------------------------------

    def attempt(self) -> Any:
        attempts = self.attempts
        if attempts is None:
            return self.do()  # the first attempt: nothing recorded unless it fails
        return attempts.run(self.do, (), {})

    def attempt_async(self) -> Any:
        attempts = self.attempts
        if attempts is None:
            return self.do()
        return attempts.run_async(self.do, (), {})

    def fail(self, *args: Any, **kwargs: Any) -> Any:
        self._failed(args[0] if args else kwargs.get("error"))
        return self.fail_handler(*args, **kwargs)

    async def fail_async(self, *args: Any, **kwargs: Any) -> Any:
        self._failed(args[0] if args else kwargs.get("error"))
        return await self.fail_handler(*args, **kwargs)

    # --- what they report -------------------------------------------------------------------------------------------

    @never_raises
    def _failed(self, error: BaseException) -> None:
        self.failures += 1
        attempts = self.attempts
        if attempts is None:
            if self.failures > 1:
                return  # nothing recorded the first failure: this call stays unobserved, not half-told
            attempts = self.attempts = self.adapter.start(self)
            if attempts is None:
                return
            self.token = _RUN.set(self)  # for the backoff's compute(): until this call ends
            attempts.ran(self.start_ns, error)
            self.adapter.watch_backoff(self.retry)

    @never_raises
    def waited(self, delay: Any) -> None:
        attempts = self.attempts
        if attempts is not None:
            attempts.attempt_ended(float(delay))

    @never_raises
    def ended(self, error: BaseException | None) -> None:
        """The call is over (only called once it failed at least once)."""
        attempts = self.attempts
        if attempts is None:
            return
        _RUN.reset(self.token)
        if error is not None and error is attempts.last_error and attempts.returned:
            retries = getattr(self.retry, "_retries", -1)
            used_up = isinstance(retries, int) and 0 <= retries < self.failures
            attempts.verdict = semconv.RESULT_EXHAUSTED if used_up else semconv.RESULT_NOT_RETRIED
        attempts.ended(error)


_RUN: contextvars.ContextVar[_RedisCall | None] = contextvars.ContextVar("otel_resilience_redis_run", default=None)


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, tuple[Any, ...], dict[str, Any]]:
    """(do, fail, the other positional arguments, the other keyword arguments) of a ``call_with_retry`` call whose
    ``do`` or ``fail`` was given by keyword."""
    kwargs = dict(kwargs)
    do = args[0] if args else kwargs.pop("do")
    fail = args[1] if len(args) > 1 else kwargs.pop("fail")
    return do, fail, args[2:], kwargs


class RedisAdapter:
    """Holds the Telemetry for redis and installs the hooks."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self._patches: Patches | None = None
        self._watched: set[type] = set()
        self._lock = threading.Lock()

    def patch(self, patches: Patches) -> None:
        self._patches = patches
        recording = self.telemetry.recording
        patches.wrap(Retry, "call_with_retry", self._call_with_retry, enabled=recording)
        patches.wrap(AsyncRetry, "call_with_retry", self._call_with_retry_async, enabled=recording)
        pending = [AbstractBackoff]
        while pending:
            cls = pending.pop()
            pending.extend(cls.__subclasses__())
            self._watch(cls)

    def _watch(self, cls: type) -> None:
        """Patch `cls`'s own ``compute`` (once), under the lock."""
        with self._lock:
            if cls in self._watched or self._patches is None:
                return
            self._watched.add(cls)
            if "compute" in vars(cls) and not getattr(vars(cls)["compute"], "__isabstractmethod__", False):
                self._patches.wrap(cls, "compute", _compute, enabled=_RUN.get)

    def watch_backoff(self, retry: Any) -> None:
        """A backoff class defined after instrumenting is patched at its first failure (its waits then seen from
        the next one); the classes on its MRO too, so an inherited ``compute`` is seen as well."""
        backoff = getattr(retry, "_backoff", None)
        if backoff is not None and type(backoff) not in self._watched:
            for cls in type(backoff).__mro__:
                if isinstance(cls, type) and issubclass(cls, AbstractBackoff):
                    self._watch(cls)

    def start(self, run: _RedisCall) -> ProxiedAttempts | None:
        name = loop_name(run.do)
        retries = getattr(run.retry, "_retries", -1)
        max_attempts = retries + 1 if isinstance(retries, int) and retries >= 0 else None
        op = RetryOperation.start(
            self.telemetry, f"{_NAME_PREFIX}.{name}", span_name=name, max_attempts=max_attempts, start_ns=run.start_ns
        )
        return None if op is None else ProxiedAttempts(op)

    # The sync and async loops are twins kept side by side: one awaits redis's loop, the other calls it.
    def _call_with_retry(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        # Every command's path (with an SDK): kept to one object and two bound methods until something fails.
        if len(args) < 2:
            try:
                do, fail, args, kwargs = _arguments(args, kwargs)
            except KeyError:
                return wrapped(*args, **kwargs)  # redis raises its own TypeError
            args = (do, fail, *args)
        run = _RedisCall(self, instance, args[0], args[1])
        try:
            value = wrapped(run.attempt, run.fail, *args[2:], **kwargs)
        except BaseException as exc:
            if run.attempts is not None:
                run.ended(exc)
            raise
        if run.attempts is not None:
            run.ended(None)
        return value

    # The async hook is the sync one's twin, kept beside it and inline (every command's path): the same bracket,
    # awaited, with the attempt methods of the async form.
    async def _call_with_retry_async(
        self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if len(args) < 2:
            try:
                do, fail, args, kwargs = _arguments(args, kwargs)
            except KeyError:
                return await wrapped(*args, **kwargs)
            args = (do, fail, *args)
        run = _RedisCall(self, instance, args[0], args[1])
        try:
            value = await wrapped(run.attempt_async, run.fail_async, *args[2:], **kwargs)
        except BaseException as exc:
            if run.attempts is not None:
                run.ended(exc)
            raise
        if run.attempts is not None:
            run.ended(None)
        return value


def _compute(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A backoff's ``compute()``: the wait redis sleeps next, for the loop in flight whose policy this is."""
    delay = wrapped(*args, **kwargs)
    run = _RUN.get()
    if run is not None and getattr(run.retry, "_backoff", None) is instance:
        run.waited(delay)
    return delay
