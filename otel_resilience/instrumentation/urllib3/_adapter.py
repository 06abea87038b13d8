"""Translate urllib3's retry loop (and requests' loops on top of it) into HTTP attempts for core/http.py.

One attempt per ``HTTPConnectionPool._make_request``; urllib3's verdicts from ``Retry.is_retry`` and
``Retry.increment``; the wait from ``time.sleep`` in ``urllib3.util.retry`` (`_RetryModuleTime` notes what urllib3
slept, whatever a subclass computed). Never ``urlopen`` nor ``Session.send``, which contrib wraps. Outer loops are
scopes (requests' ``Session.request`` and ``HTTPAdapter.send``, ``PoolManager.urlopen``), so redirects are resends of
one request (docs/http.md). urllib3 is synchronous: a context variable holds the run of its loop.
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable
from time import perf_counter
from typing import Any, Final
from urllib.parse import urlsplit

import urllib3
from opentelemetry import propagate
from urllib3 import connectionpool
from urllib3.exceptions import MaxRetryError
from urllib3.util import retry as retry_module
from urllib3.util.retry import Retry

from otel_resilience import semconv
from otel_resilience.core import Telemetry, http, never_raises, outcome, report_internal_error
from otel_resilience.patching import Patches

LIBRARY: Final = "urllib3"
_STARTING: Final = f"{__name__}: starting an attempt"  # where an error of ours is reported from (`_attempt`)
_RESPONDED: Final = f"{__name__}: recording a response"

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

try:
    from requests.structures import CaseInsensitiveDict as _RequestsHeaders
except ImportError:  # urllib3 without requests
    _RequestsHeaders = None  # type: ignore[assignment,misc]



class _Chain:
    """One run of urllib3's retry loop in this thread: the request it belongs to, and where urllib3 is in it."""

    __slots__ = ("request", "scoped", "awaiting", "decided", "next_retry", "waited", "measured_from")

    def __init__(self, request: http.HttpRequest, scoped: bool) -> None:
        self.request = request
        self.scoped = scoped  # a scope (session, adapter, pool manager) ends the request; we report `layer_ended`
        self.awaiting = False  # an attempt ended and urllib3 has not yet decided what follows
        self.decided = False  # urllib3 gave its verdict (an outer loop may still go on, inside a scope)
        self.next_retry: Retry | None = None  # what increment returned: the Retry the next resend receives
        self.waited: float | None = None  # what urllib3 slept since the attempt ended (`_RetryModuleTime`)
        self.measured_from: float | None = None  # when a Retry that waits its own way was made (`_increment`)

    def resume(self) -> None:
        """urllib3 goes on with the next attempt: what it did between the two attempts is spent."""
        self.awaiting = self.decided = False
        self.next_retry = self.waited = self.measured_from = None


_CHAIN: contextvars.ContextVar[_Chain | None] = contextvars.ContextVar("otel_resilience_urllib3_chain", default=None)


def _verdict_pending() -> bool:
    """The check of the ``Retry.is_retry`` hook, which urllib3 calls on every response. Inside a scope, a response
    that is not a failure, on a span of ours, needs no verdict: the request is a success unless urllib3 goes on (which
    `Retry.increment` shows), and the scope ends it. Only a failing status (``not_retried`` if accepted), a request we
    end ourselves, or contrib's span (written while it is open) need to hear that urllib3 accepted the response."""
    chain = _CHAIN.get()
    if chain is None or not chain.awaiting:
        return False
    request = chain.request
    return not chain.scoped or request.error_type is not None or request.container is not None


def _headers_copy(headers: Any) -> Any:
    """A copy of an attempt's headers to inject into: the caller's own stay as they were. requests'
    ``CaseInsensitiveDict`` copies itself in Python, key by key, at a cost above that of the whole span; its state is
    one ``OrderedDict`` (``_store``, annotated in the class), copied in C here into an object of the same class."""
    if headers is None:
        return {}
    if type(headers) is _RequestsHeaders:
        copy = _RequestsHeaders.__new__(_RequestsHeaders)
        copy._store = headers._store.copy()
        return copy
    return headers.copy() if hasattr(headers, "copy") else dict(headers)


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs.get(name)


def _requests_error_result(error: BaseException) -> str | None:
    """requests raises ``TooManyRedirects`` when its own redirect limit stops the loop: the policy gave up."""
    from requests.exceptions import TooManyRedirects

    return semconv.RESULT_EXHAUSTED if isinstance(error, TooManyRedirects) else None


def _method_url(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The URL of ``Session.request(method, url, ...)`` and ``PoolManager.urlopen(method, url, ...)``."""
    return args[1] if len(args) > 1 else kwargs.get("url")


def _prepared_url(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The URL of ``HTTPAdapter.send(request, ...)``: the prepared request's."""
    return getattr(args[0] if args else kwargs.get("request"), "url", None)


class Urllib3Adapter:
    """Holds the Telemetry for urllib3 (and requests) and installs the hooks."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch(self, patches: Patches) -> None:
        """Attempts and outer loops; deferred until something records: the Retry hooks (they only act inside a run).
        An outer call that joins the scope it runs in (an adapter inside a session, a pool manager's redirect
        recursion) costs only its check."""
        # The full check (suppression included) is made once per request, where the request starts (a scope opening,
        # or HttpRequest.start).
        # An outer loop is a scope: a run of urllib3's loop inside it starts afresh (`_CHAIN`), in the scope's request.
        telemetry = self.telemetry
        recording = telemetry.may_record
        opens_scope = http.opens_scope(telemetry)
        patches.wrap(connectionpool.HTTPConnectionPool, "_make_request", self._attempt, enabled=recording)
        scope = http.scope_wrapper(telemetry, _method_url, error_result=_requests_error_result, afresh=_CHAIN)
        patches.wrap(urllib3.PoolManager, "urlopen", scope, enabled=opens_scope)
        try:
            import requests
        except ImportError:
            pass
        else:
            patches.wrap(requests.Session, "request", scope, enabled=recording)
            adapter_scope = http.scope_wrapper(
                telemetry, _prepared_url, error_result=_requests_error_result, afresh=_CHAIN
            )
            patches.wrap(requests.adapters.HTTPAdapter, "send", adapter_scope, enabled=opens_scope)
        patches.wrap(Retry, "is_retry", self._is_retry, enabled=_verdict_pending, deferred=True)
        patches.wrap(Retry, "increment", self._increment, enabled=_CHAIN.get, deferred=True)
        patches.replace(retry_module, "time", _RetryModuleTime(self), deferred=True)

    # --- attempts ------------------------------------------------------------------------------------------------

    def _attempt(self, wrapped: Callable[..., Any], pool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``_make_request(conn, method, url, body=None, headers=None, retries=None, ...)``: one attempt. urlopen passes
        all but the first three by keyword."""
        # Our two steps are guarded here, inline: a `never_raises` frame on each of them showed in the Python work per
        # request of `benchmarks.opcodes`.
        try:
            started = self._start_attempt(pool, args, kwargs)
        except Exception:
            report_internal_error(_STARTING)
            started = None
        if started is None:
            return wrapped(*args, **kwargs)
        chain, args, kwargs = started
        try:
            response = wrapped(*args, **kwargs)
        except BaseException as exc:
            self._attempt_failed(chain, exc)
            raise
        try:
            chain.request.attempt_ended(status=int(response.status))
            chain.awaiting = True  # urllib3 is to decide: Retry.is_retry, Retry.increment, or return the response
        except Exception:
            report_internal_error(_RESPONDED)
        return response

    def _start_attempt(
        self, pool: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[_Chain, tuple[Any, ...], dict[str, Any]] | None:
        if len(args) == 3:  # as urlopen calls it, with the method and URL as str
            method, target, headers, retries = args[1], args[2], kwargs.get("headers"), kwargs.get("retries")
        else:
            method, target = str(_arg(args, kwargs, 1, "method")), str(_arg(args, kwargs, 2, "url"))
            headers, retries = _arg(args, kwargs, 4, "headers"), _arg(args, kwargs, 5, "retries")
        scheme = pool.scheme or "http"
        if target.startswith("/"):
            host, port = pool.host, pool.port
        else:  # a proxy's absolute form: the server behind the proxy is the one we talk about
            parts = urlsplit(target)
            host, port = parts.hostname or pool.host, parts.port
        port = port or http.default_port(scheme)
        chain = self._chain_for(method, host, retries)
        if chain is None:
            return None
        ctx = chain.request.attempt_started(method, http.absolute_url(scheme, host, port, target), host, port)
        if ctx is not None:  # alone: this attempt's context goes to the server, on a copy of the headers
            carrier = _headers_copy(headers)
            propagate.inject(carrier, context=ctx)
            if len(args) > 4:
                args = (*args[:4], carrier, *args[5:])
            else:  # this call's own keyword dict (made by the patch's ``**kwargs``): the caller's is not touched
                kwargs["headers"] = carrier
        return chain, args, kwargs

    def _chain_for(self, method: str, host: str, retries: Any) -> _Chain | None:
        chain = _CHAIN.get()
        if chain is not None and chain.awaiting:
            if retries is not None and retries is chain.next_retry:  # urlopen resending after a retry or redirect
                if chain.measured_from is not None and chain.waited is None:
                    chain.request.retrying(perf_counter() - chain.measured_from)
                chain.resume()
                return chain
            self._loop_ended(chain, None)  # left urllib3's loop by a path we did not see: end it as it stands
        request, scoped = http.request_in_scope(self.telemetry, method, host, retried=_makes_retries(retries))
        if request is None:
            return None
        chain = _Chain(request, scoped)
        _CHAIN.set(chain)
        return chain

    @never_raises
    def _attempt_failed(self, chain: _Chain, error: BaseException) -> None:
        chain.request.attempt_ended(error=error)
        handed_to_retry = chain.awaiting = isinstance(error, _HANDED_TO_RETRY)  # then Retry.increment decides
        if not handed_to_retry:
            self._loop_ended(chain, outcome.final_result(retry_wanted=False, failed=True, error=error), error)

    def _loop_ended(self, chain: _Chain, result: str | None, error: BaseException | None = None) -> None:
        """urllib3's verdict on its loop. Inside a scope the request may still go on (a redirect requests follows):
        the layer ended; otherwise the request is over."""
        chain.awaiting = False
        chain.decided = True
        if chain.scoped:
            if result is not None:
                chain.request.layer_ended(result)
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
            self._loop_ended(chain, outcome.final_result(retry_wanted=False, failed=chain.request.error_type is not None))

    def _increment(self, wrapped: Callable[..., Any], retry: Retry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        chain = _CHAIN.get()
        # After urllib3's verdict inside a scope, a pool manager increments for a cross-host redirect.
        if chain is None or not (chain.awaiting or chain.scoped and chain.decided):
            return wrapped(*args, **kwargs)
        try:
            next_retry = wrapped(*args, **kwargs)
        except MaxRetryError:
            self._gave_up(chain, outcome.final_result(retry_wanted=True, failed=True), None)
            raise
        except BaseException as exc:  # the policy does not retry this error: urllib3 re-raises it
            self._gave_up(chain, outcome.final_result(retry_wanted=False, failed=True, error=exc), exc)
            raise
        if chain.awaiting:
            chain.next_retry = next_retry
            if _waits_its_own_way(type(next_retry)):
                chain.measured_from = perf_counter()
        return next_retry

    @never_raises
    def _gave_up(self, chain: _Chain, result: str | None, error: BaseException | None) -> None:
        self._loop_ended(chain, result, error)

    @never_raises
    def slept(self, seconds: Any) -> None:
        """urllib3 slept `seconds` through ``time.sleep`` of its retry module (`_RetryModuleTime`)."""
        chain = _CHAIN.get()
        if chain is not None and chain.awaiting:
            chain.waited = waited = (chain.waited or 0.0) + max(float(seconds), 0.0)
            chain.request.retrying(waited)

    def sleep_interrupted(self, error: BaseException) -> None:
        """urllib3's sleep raised (an interrupt, a timeout of the app's): its loop is over."""
        chain = _CHAIN.get()
        if chain is not None and chain.awaiting:
            self._gave_up(chain, semconv.RESULT_ABORTED if outcome.is_abort(error) else None, error)


class _RetryModuleTime:
    """Stands in for the ``time`` module inside ``urllib3.util.retry``: every attribute is the real module's, looked up
    at each use (so a test's or the app's patch of ``time.sleep`` still applies), and ``sleep`` also tells the adapter
    what urllib3 chose to wait, as it chose it.

    Not a speed trick: it is the one place that sees the exact value urllib3 sleeps, whichever path chose it
    (``Retry-After``, the jittered backoff) and also for a ``Retry`` subclass that overrides ``get_backoff_time``. Hooks
    on ``Retry.get_backoff_time`` and ``get_retry_after`` would miss such an override and would re-derive urllib3's
    choice between the two; its only state is the adapter it reports to."""

    __slots__ = ("_adapter",)

    def __init__(self, adapter: Urllib3Adapter) -> None:
        self._adapter = adapter

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def sleep(self, seconds: float) -> None:
        try:
            time.sleep(seconds)
        except BaseException as exc:
            self._adapter.sleep_interrupted(exc)
            raise
        self._adapter.slept(seconds)


def _makes_retries(retries: Any) -> bool:
    """Whether a request's own urllib3 policy can resend it: not with ``retries=False``, ``Retry(False)``,
    ``Retry(0)``/``total=0`` (requests' default adapter), nor with every counter at 0. urlopen hands `_make_request`
    the ``Retry`` it resolved; None or anything else is read as urllib3's default, which retries."""
    if retries is False:
        return False
    if not isinstance(retries, Retry):
        return True
    total = retries.total
    if total is False or total == 0:
        return False
    if total is not None:
        return True
    return not all(
        count is not None and not count
        for count in (retries.connect, retries.read, retries.redirect, retries.status, retries.other)
    )


_WAITS: Final = ("sleep", "sleep_for_retry", "_sleep_backoff")
_URLLIB3_WAITS: Final = tuple(getattr(Retry, name, None) for name in _WAITS)


@functools.lru_cache(maxsize=64)
def _waits_its_own_way(cls: type[Retry]) -> bool:
    """A ``Retry`` subclass overriding how it waits may not sleep through urllib3's ``time``: its wait is measured.
    Asked at every retry, of the few classes an app uses: cached."""
    return cls is not Retry and tuple(getattr(cls, name, None) for name in _WAITS) != _URLLIB3_WAITS
