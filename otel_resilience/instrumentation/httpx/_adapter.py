"""Translate httpx's transport retries (httpcore's connection retries) and its redirect loop into HTTP attempts, for
httpx/httpcore and for their fork httpx2/httpcore2 (same code, own packages): one adapter, given the client's modules.

``ConnectionPool.handle_request``/``AsyncConnectionPool.handle_async_request`` are one request through the pool
(contrib wraps httpx's transports, one level up); httpcore's public ``trace`` request extension tells when a
connection attempt failed and when the next began; ``exponential_backoff`` gives the waits httpcore draws; and
``Client.send``/``AsyncClient.send`` are scopes, so a redirect is a resend of the same request (docs/http.md).
"""

from __future__ import annotations

import contextvars
import importlib
from collections.abc import Callable, Iterator
from time import time_ns
from types import ModuleType
from typing import Any, Final, NamedTuple

from opentelemetry import propagate
from opentelemetry.context import Context

from otel_resilience import semconv
from otel_resilience.core import Telemetry, http, never_raises, outcome
from otel_resilience.patching import Patches

_CONNECT_FAILED: Final = frozenset(
    ("connection.connect_tcp.failed", "connection.connect_unix_socket.failed", "connection.start_tls.failed")
)
_RETRY_STARTED: Final = "connection.retry.started"
_RETRY_COMPLETE: Final = "connection.retry.complete"


class ClientModules(NamedTuple):
    """The modules of one httpx flavour: httpx and httpcore, or httpx2 and httpcore2 (a fork with the same code)."""

    httpx: ModuleType
    httpcore: ModuleType
    sync_connection: ModuleType
    async_connection: ModuleType

    @classmethod
    def load(cls, httpx_name: str, httpcore_name: str) -> ClientModules:
        return cls(
            importlib.import_module(httpx_name),
            importlib.import_module(httpcore_name),
            importlib.import_module(f"{httpcore_name}._sync.connection"),
            importlib.import_module(f"{httpcore_name}._async.connection"),
        )


def _with_trace_context(headers: list[tuple[bytes, bytes]], ctx: Context) -> list[tuple[bytes, bytes]]:
    """A copy of httpcore's header list with the trace context of `ctx` in place of any earlier one."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    names = {name.lower().encode("latin-1") for name in carrier}
    copied = [(name, value) for name, value in headers if name.lower() not in names]
    copied.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in carrier.items())
    return copied


class _PoolRequest:
    """One request through an httpcore pool: its place in the logical request, and what httpcore told us so far."""

    __slots__ = (
        "request",
        "scoped",
        "core_request",
        "method",
        "url",
        "host",
        "port",
        "headers",
        "extensions",
        "delay",
        "connect_error",
        "connect_end",
        "retried_errors",
    )

    def __init__(
        self, request: http.HttpRequest, scoped: bool, core_request: Any, retried_errors: tuple[type[BaseException], ...]
    ) -> None:
        self.request = request
        self.retried_errors = retried_errors  # what httpcore retries: when one escapes the pool, its budget is spent
        self.scoped = scoped
        self.core_request = core_request
        url = core_request.url
        scheme = url.scheme.decode("ascii")
        self.method = core_request.method.decode("ascii")
        self.host = url.host.decode("ascii")
        self.port = url.port or http.default_port(scheme)
        self.url = http.absolute_url(scheme, self.host, self.port, url.target.decode("ascii"))
        self.headers = core_request.headers  # the request's own, restored after the call
        self.extensions = core_request.extensions
        self.delay: float | None = None
        self.connect_error: BaseException | None = None
        self.connect_end: int | None = None

    def attempt(self) -> None:
        """A connection attempt (or the first attempt) begins: the request's headers carry its trace context."""
        ctx = self.request.attempt_started(self.method, self.url, self.host, self.port)
        if ctx is not None:
            self.core_request.headers = _with_trace_context(self.headers, ctx)

    @never_raises
    def on_trace(self, name: str, info: dict[str, Any]) -> None:
        if name in _CONNECT_FAILED:
            self.connect_error = info.get("exception")
            self.connect_end = time_ns()
        elif name == _RETRY_STARTED:  # the failed connection attempt is retried after the wait httpcore just drew
            self.request.attempt_ended(error=self.connect_error, end_ns=self.connect_end)
            self.request.retrying(self.delay)
            self.delay = None
        elif name == _RETRY_COMPLETE:
            self.attempt()

    def trace_extension(self, user: Callable[..., Any] | None, is_async: bool) -> Callable[..., Any]:
        """Our ``trace`` extension, chained to the app's: ours never raises, theirs behaves as without us."""
        observe = self.on_trace
        if is_async:

            async def async_trace(name: str, info: dict[str, Any]) -> None:
                observe(name, info)
                if user is not None:
                    await user(name, info)

            return async_trace

        def trace(name: str, info: dict[str, Any]) -> Any:
            observe(name, info)
            return None if user is None else user(name, info)

        return trace

    def restore(self) -> None:
        self.core_request.headers = self.headers
        self.core_request.extensions = self.extensions

    def responded(self, response: Any) -> None:
        status = int(response.status)
        self.request.attempt_ended(status=status)
        self.ended(outcome.final_result(retry_wanted=False, failed=outcome.status_error_type(status) is not None), None)

    def failed(self, error: BaseException) -> None:
        end_ns = self.connect_end if error is self.connect_error else None
        self.request.attempt_ended(error=error, end_ns=end_ns)
        # httpcore retries only these: one escaping means its retry budget is spent
        retried = isinstance(error, self.retried_errors)
        self.ended(outcome.final_result(retry_wanted=retried, failed=True, error=error), error)

    def ended(self, result: str, error: BaseException | None) -> None:
        if self.scoped:  # the client's redirect loop may go on: its scope ends the request
            self.request.layer_ended(result)
        else:
            self.request.ended(result, error)


_CURRENT: contextvars.ContextVar[_PoolRequest | None] = contextvars.ContextVar(
    "otel_resilience_httpx_pool_request", default=None
)


class _ObservedDelays:
    """httpcore's iterator of waits, telling the pool request each wait as httpcore draws it."""

    __slots__ = ("_delays", "_pool_request")

    def __init__(self, delays: Iterator[float], pool_request: _PoolRequest) -> None:
        self._delays = delays
        self._pool_request = pool_request

    def __iter__(self) -> _ObservedDelays:
        return self

    def __next__(self) -> float:
        delay = next(self._delays)
        self._pool_request.delay = delay
        return delay


def _app_url(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The URL of ``Client.send(request, ...)``: the request's, as the app built it."""
    url = getattr(args[0] if args else kwargs.get("request"), "url", None)
    return None if url is None else str(url)


class HttpxAdapter:
    """Holds the Telemetry for one httpx flavour (`modules`) and installs the hooks."""

    def __init__(self, telemetry: Telemetry, modules: ClientModules) -> None:
        self.telemetry = telemetry
        self.modules = modules
        self._retried_errors = (modules.httpcore.ConnectError, modules.httpcore.ConnectTimeout)

    def _error_result(self, error: BaseException) -> str | None:
        """httpx raises ``TooManyRedirects`` when its redirect limit stops the loop: the policy gave up."""
        return semconv.RESULT_EXHAUSTED if isinstance(error, self.modules.httpx.TooManyRedirects) else None

    def patch(self, patches: Patches) -> None:
        telemetry = self.telemetry
        httpx, httpcore = self.modules.httpx, self.modules.httpcore
        recording = telemetry.recording
        patches.wrap(httpcore.ConnectionPool, "handle_request", self._pool_request, enabled=recording)
        patches.wrap(httpcore.AsyncConnectionPool, "handle_async_request", self._async_pool_request, enabled=recording)
        # The redirect loop (``Client.send``) is a scope: the requests of its hops are one request. The scope opens
        # also where instrumentation is suppressed (it then holds no request), so that what is sent inside does not
        # join the request of an outer scope.
        may_record = telemetry.may_record
        patches.wrap(
            httpx.Client, "send", http.scope_wrapper(telemetry, _app_url, error_result=self._error_result),
            enabled=may_record,
        )
        patches.wrap(
            httpx.AsyncClient, "send", http.async_scope_wrapper(telemetry, _app_url, error_result=self._error_result),
            enabled=may_record,
        )
        for module in (self.modules.sync_connection, self.modules.async_connection):
            if "exponential_backoff" in vars(module):
                patches.wrap(module, "exponential_backoff", self._observe_delays, enabled=_CURRENT.get)

    # --- requests through the pool -------------------------------------------------------------------------------

    def _pool_request(self, wrapped: Callable[..., Any], pool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        state = self._start(pool, args, kwargs, is_async=False)
        if state is None:
            return wrapped(*args, **kwargs)
        token = _CURRENT.set(state)
        try:
            response = wrapped(*args, **kwargs)
        except BaseException as exc:
            self._failed(state, exc)
            raise
        finally:
            _CURRENT.reset(token)
        self._responded(state, response)
        return response

    # The async hook is the sync one's twin, kept beside it: the same bracket, awaited.
    async def _async_pool_request(
        self, wrapped: Callable[..., Any], pool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        state = self._start(pool, args, kwargs, is_async=True)
        if state is None:
            return await wrapped(*args, **kwargs)
        token = _CURRENT.set(state)
        try:
            response = await wrapped(*args, **kwargs)
        except BaseException as exc:
            self._failed(state, exc)
            raise
        finally:
            _CURRENT.reset(token)
        self._responded(state, response)
        return response

    @never_raises
    def _start(self, pool: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *, is_async: bool) -> _PoolRequest | None:
        core_request = args[0] if args else kwargs["request"]
        request, scoped = http.request_in_scope(
            self.telemetry,
            core_request.method.decode("ascii"),
            core_request.url.host.decode("ascii"),
            retried=bool(getattr(pool, "_retries", 1)),  # a transport with retries=0 makes plain requests
        )
        if request is None:
            return None
        state = _PoolRequest(request, scoped, core_request, self._retried_errors)
        extensions = dict(state.extensions)  # connection attempts are told apart by httpcore's trace extension
        extensions["trace"] = state.trace_extension(extensions.get("trace"), is_async)
        core_request.extensions = extensions
        state.attempt()
        return state

    @never_raises
    def _failed(self, state: _PoolRequest, error: BaseException) -> None:
        state.restore()
        state.failed(error)

    @never_raises
    def _responded(self, state: _PoolRequest, response: Any) -> None:
        state.restore()
        state.responded(response)

    def _observe_delays(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        delays = wrapped(*args, **kwargs)
        state = _CURRENT.get()
        return delays if state is None else _ObservedDelays(delays, state)
