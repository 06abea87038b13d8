"""Translate urllib3's retry loop (and requests' loops on top of it) into HTTP attempts for `core.http`.

urllib3 makes one attempt per ``HTTPConnectionPool._make_request`` call and decides in ``HTTPConnectionPool.urlopen``,
which calls itself once per resend: ``Retry.is_retry`` (is this status retried?), ``Retry.increment`` (the next
``Retry``; ``MaxRetryError`` when the budget is spent; the error re-raised when the policy does not retry it), then
``Retry.sleep`` / ``Retry.sleep_for_retry`` (the wait: ``get_retry_after`` or ``get_backoff_time``, whose results we
observe, never recompute: the backoff has random jitter). We hook exactly those and never ``urlopen`` itself: contrib's
urllib3 instrumentation wraps it, and its ``unwrap`` removes the outermost layer, whoever owns it. Nor requests'
``Session.send``, which contrib's requests instrumentation patches by hand.

Outer loops are scopes (`core.http.call_in_scope`), so their resends join the same request: requests'
``Session.request`` (its redirect loop, and auth handlers resending after a 401), ``HTTPAdapter.send`` when called
directly, and ``PoolManager.urlopen`` (cross-host redirects). A pool used directly (``pool.urlopen``, ``pool.request``)
is followed through the ``Retry`` object each resend receives from ``increment``.

State lives in a context variable: urllib3 is synchronous, and its whole loop runs in the caller's thread.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from time import perf_counter
from typing import Any, Final
from urllib.parse import urlsplit

import urllib3
from opentelemetry import propagate
from urllib3 import connectionpool
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from otel_resilience import semconv
from otel_resilience.core import Telemetry, errors, http, never_raises
from otel_resilience.instrumentation._base import Patches

LIBRARY: Final = "urllib3"

# What urlopen catches around _make_request and hands to Retry.increment: any other exception leaves urlopen at once.
_HANDED_TO_RETRY: Final = tuple(
    cls
    for cls in (
        *(getattr(connectionpool, name, None) for name in ("TimeoutError", "HTTPException", "ProtocolError")),
        *(getattr(connectionpool, name, None) for name in ("BaseSSLError", "SSLError", "CertificateError")),
        getattr(connectionpool, "ProxyError", None),
        OSError,
    )
    if isinstance(cls, type)
)

_WAIT_GETTERS: Final = ("get_retry_after", "get_backoff_time")


class _Chain:
    """One run of urllib3's retry loop in this thread: the request it belongs to, and where urllib3 is in it."""

    __slots__ = ("request", "scoped", "awaiting", "decided", "status", "next_retry", "sleeping", "chosen", "observed")

    def __init__(self, request: http.HttpRequest, scoped: bool) -> None:
        self.request = request
        self.scoped = scoped  # a scope (session, adapter, pool manager) ends the request; we only settle it
        self.awaiting = False  # an attempt ended and urllib3 has not yet decided what follows
        self.decided = False  # urllib3 gave its verdict (an outer loop may still go on, inside a scope)
        self.status: int | None = None
        self.next_retry: Retry | None = None  # what increment returned: the Retry the next resend receives
        self.sleeping = False
        self.chosen: float | None = None
        self.observed = False


_CHAIN: contextvars.ContextVar[_Chain | None] = contextvars.ContextVar("otel_resilience_urllib3_chain", default=None)


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _requests_error_result(error: BaseException) -> str | None:
    """requests raises ``TooManyRedirects`` when its own redirect limit stops the loop: the policy gave up."""
    from requests.exceptions import TooManyRedirects

    return semconv.RESULT_EXHAUSTED if isinstance(error, TooManyRedirects) else None


class Urllib3Adapter:
    """Holds the Telemetry for urllib3 (and requests) and installs the hooks."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch(self, patches: Patches) -> None:
        """Attempts and outer loops now; the Retry hooks once something records (they only matter inside a run)."""
        # The full check (suppression included) is made once per request, where the request starts (start_retry).
        recording = self.telemetry.may_record
        patches.wrap(connectionpool.HTTPConnectionPool, "_make_request", self._attempt, enabled=recording)
        patches.wrap(urllib3.PoolManager, "urlopen", self._pool_manager_scope, enabled=recording)
        try:
            import requests
        except ImportError:
            pass
        else:
            patches.wrap(requests.Session, "request", self._session_scope, enabled=recording)
            patches.wrap(requests.adapters.HTTPAdapter, "send", self._adapter_scope, enabled=recording)
        self.telemetry.when_live(lambda: self._patch_retry_hooks(patches))

    def _patch_retry_hooks(self, patches: Patches) -> None:
        active = _CHAIN.get
        patches.wrap(Retry, "is_retry", self._is_retry, enabled=active)
        patches.wrap(Retry, "increment", self._increment, enabled=active)
        patches.wrap(Retry, "sleep", self._sleep, enabled=active)
        patches.wrap(Retry, "sleep_for_retry", self._sleep, enabled=active)
        for name in _WAIT_GETTERS:
            patches.wrap(Retry, name, self._wait_observer(vars(Retry), name), enabled=active)

    # --- outer loops ---------------------------------------------------------------------------------------------

    def _session_scope(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``Session.request(method, url, ...)``: a new request, also when a hook of another request makes it."""
        return self._scope(wrapped, args, kwargs, join=False, url=_arg(args, kwargs, 1, "url"))

    def _adapter_scope(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``HTTPAdapter.send(request, ...)``: part of the session's request, or one of its own when called directly."""
        return self._scope(wrapped, args, kwargs, join=True, url=getattr(_arg(args, kwargs, 0, "request"), "url", None))

    def _pool_manager_scope(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``PoolManager.urlopen(method, url, ...)``: follows redirects across hosts by calling itself; one request."""
        return self._scope(wrapped, args, kwargs, join=True, url=_arg(args, kwargs, 1, "url"))

    @staticmethod
    def _scope(wrapped: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *, join: bool, url: Any) -> Any:
        token = _CHAIN.set(None)  # a loop of urllib3's inside this call starts afresh, in the scope's request
        try:
            return http.call_in_scope(
                LIBRARY,
                wrapped,
                args,
                kwargs,
                join=join,
                error_result=_requests_error_result,
                url=url if isinstance(url, str) else None,
            )
        finally:
            _CHAIN.reset(token)

    # --- attempts ------------------------------------------------------------------------------------------------

    def _attempt(self, wrapped: Callable[..., Any], pool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``_make_request(conn, method, url, body=None, headers=None, retries=None, ...)``: one attempt."""
        started = self._start_attempt(pool, args, kwargs)
        if started is None:
            return wrapped(*args, **kwargs)
        chain, args, kwargs = started
        try:
            response = wrapped(*args, **kwargs)
        except BaseException as exc:
            self._attempt_failed(chain, exc)
            raise
        self._attempt_responded(chain, response)
        return response

    @never_raises
    def _start_attempt(
        self, pool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[_Chain, tuple[Any, ...], dict[str, Any]] | None:
        method = str(_arg(args, kwargs, 1, "method"))
        target = str(_arg(args, kwargs, 2, "url"))
        scheme = pool.scheme or "http"
        if target.startswith("/"):
            host, port = pool.host, pool.port
        else:  # a proxy's absolute form: the server behind the proxy is the one we talk about
            parts = urlsplit(target)
            host, port = parts.hostname or pool.host, parts.port
        port = port or http.default_port(scheme)
        chain = self._chain_for(method, host, _arg(args, kwargs, 5, "retries"))
        if chain is None:
            return None
        ctx = chain.request.attempt_started(method, http.absolute_url(scheme, host, port, target), host, port)
        if ctx is not None:  # alone: this attempt's context goes to the server, on a copy of the headers
            headers = _arg(args, kwargs, 4, "headers")
            carrier = {} if headers is None else headers.copy() if hasattr(headers, "copy") else dict(headers)
            propagate.inject(carrier, context=ctx)
            if len(args) > 4:
                args = (*args[:4], carrier, *args[5:])
            else:
                kwargs = {**kwargs, "headers": carrier}
        return chain, args, kwargs

    def _chain_for(self, method: str, host: str, retries: Any) -> _Chain | None:
        chain = _CHAIN.get()
        if chain is not None and chain.awaiting:
            if retries is not None and retries is chain.next_retry:  # urlopen resending after a retry or redirect
                chain.awaiting = False
                return chain
            self._final(chain, None)  # left urllib3's loop by a path we did not see: end it as it stands
        request, scoped = http.request_in_scope(self.telemetry, method, host)
        if request is None:
            return None
        chain = _Chain(request, scoped)
        _CHAIN.set(chain)
        return chain

    @never_raises
    def _attempt_responded(self, chain: _Chain, response: Any) -> None:
        chain.status = status = int(response.status)
        chain.request.attempt_ended(status=status)
        chain.awaiting = True
        chain.decided = False
        chain.next_retry = None

    @never_raises
    def _attempt_failed(self, chain: _Chain, error: BaseException) -> None:
        chain.status = None
        chain.request.attempt_ended(error=error)
        chain.decided = False
        chain.next_retry = None
        if isinstance(error, _HANDED_TO_RETRY):
            chain.awaiting = True  # Retry.increment decides
        else:
            self._final(chain, semconv.RESULT_NOT_RETRIED, error)

    def _final(self, chain: _Chain, result: str | None, error: BaseException | None = None) -> None:
        """urllib3's verdict on its loop. Inside a scope the request may still go on (a redirect requests follows):
        settle it; otherwise the request is over."""
        chain.awaiting = False
        chain.decided = True
        if errors.is_abort(error):
            result = semconv.RESULT_ABORTED
        if chain.scoped:
            if result is not None:
                chain.request.settle(result)
            return
        chain.request.ended(result, error)
        if _CHAIN.get() is chain:
            _CHAIN.set(None)

    # --- urllib3's decisions -------------------------------------------------------------------------------------

    def _is_retry(self, wrapped: Callable[..., Any], retry: Retry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        retried = wrapped(*args, **kwargs)
        if not retried:
            self._status_accepted()
        return retried

    @never_raises
    def _status_accepted(self) -> None:
        chain = _CHAIN.get()
        if chain is not None and chain.awaiting:
            failed = http.status_error_type(chain.status) is not None
            self._final(chain, semconv.RESULT_NOT_RETRIED if failed else semconv.RESULT_SUCCESS)

    def _increment(self, wrapped: Callable[..., Any], retry: Retry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        chain = _CHAIN.get()
        # After urllib3's verdict inside a scope, a pool manager increments for a cross-host redirect.
        if chain is None or not (chain.awaiting or chain.scoped and chain.decided):
            return wrapped(*args, **kwargs)
        try:
            next_retry = wrapped(*args, **kwargs)
        except MaxRetryError:
            self._gave_up(chain, semconv.RESULT_EXHAUSTED, None)
            raise
        except BaseException as exc:  # the policy does not retry this error: urllib3 re-raises it
            self._gave_up(chain, semconv.RESULT_NOT_RETRIED, exc)
            raise
        if chain.awaiting:
            chain.next_retry = next_retry
        return next_retry

    @never_raises
    def _gave_up(self, chain: _Chain, result: str | None, error: BaseException | None) -> None:
        self._final(chain, result, error)

    def _sleep(self, wrapped: Callable[..., Any], retry: Retry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``Retry.sleep`` / ``sleep_for_retry``: urllib3 waits before the next attempt. The wait is what the getters
        it calls returned (observed in `_wait_observer`); a subclass computing it its own way is measured instead."""
        chain = _CHAIN.get()
        if chain is None or not chain.awaiting or chain.sleeping:
            return wrapped(*args, **kwargs)
        chain.sleeping = True
        chain.chosen = None
        chain.observed = False
        began = perf_counter()
        try:
            value = wrapped(*args, **kwargs)
        except BaseException as exc:
            chain.sleeping = False
            self._gave_up(chain, None, exc)
            raise
        chain.sleeping = False
        if chain.observed:
            chain.request.retrying(chain.chosen or 0.0)
        else:
            chain.request.retrying(perf_counter() - began)
        return value

    @staticmethod
    def _wait_observer(namespace: Any, name: str) -> Callable[[Callable[..., Any], Retry, tuple[Any, ...], dict[str, Any]], Any]:
        """Observe ``get_retry_after`` / ``get_backoff_time`` while urllib3 sleeps: what they return is what it waits
        (``Retry-After`` when truthy; otherwise the backoff, slept when positive). A subclass overriding a getter
        returns something else than our patched base method sees: then the sleep is measured."""

        @never_raises
        def record(retry: Retry, value: Any) -> None:
            chain = _CHAIN.get()
            if chain is not None and chain.sleeping and getattr(type(retry), name, None) is namespace.get(name):
                chain.observed = True
                if value:
                    chain.chosen = max(float(value), 0.0)

        def observe(wrapped: Callable[..., Any], retry: Retry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            value = wrapped(*args, **kwargs)
            record(retry, value)
            return value

        return observe
