"""The HTTP observer: every attempt of one logical request (retries, resends, redirects) is one CLIENT span of ours,
or, beside contrib's HTTP instrumentation, facts on contrib's CLIENT span; and the scope wrappers that make a client's
outer loop (redirects) one request. docs/http.md has the shapes and their reasons."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Awaitable, Callable
from time import time_ns
from typing import Any, Final
from urllib.parse import urlsplit

from opentelemetry.context import Context, get_current
from opentelemetry.trace import Span, SpanKind, get_current_span, set_span_in_context

from otel_resilience import semconv
from otel_resilience.core import errors, outcome
from otel_resilience.core._safety import never_raises, report_internal_error
from otel_resilience.core.outcome import status_error_type
from otel_resilience.core.retry import EndedAttempt, current_depth
from otel_resilience.core.telemetry import Telemetry

KNOWN_METHODS: Final = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY")
)
"""The methods the HTTP conventions name (RFC 9110, 5789 and the QUERY draft); others are ``_OTHER``."""

DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}

ErrorResult = Callable[[BaseException], "str | None"]
"""Maps an exception escaping a scope to a `retry.result` when the adapter knows better (requests' TooManyRedirects is
``exhausted``); None leaves the decision to `outcome.request_result`."""


def default_port(scheme: str) -> int | None:
    return DEFAULT_PORTS.get(scheme.lower())


def absolute_url(scheme: str, host: str, port: int | None, target: str) -> str:
    """The URL of a request given as origin + request target (what a connection pool sends): an absolute target
    (a proxy's absolute form) is the URL itself; the default port is left out, as in the URL the user wrote."""
    if not target.startswith("/"):
        return target
    return _origin(scheme, host, port) + target


@functools.lru_cache(maxsize=256)
def _origin(scheme: str, host: str, port: int | None) -> str:
    """``scheme://host[:port]``, cached: a client talks to few origins, and this runs on every attempt."""
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != default_port(scheme):
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}"


_KNOWN_METHOD_NAMES: Final = {method: (method, method, None) for method in KNOWN_METHODS}


def method_names(method: str) -> tuple[str, str, str | None]:
    """(span name, ``http.request.method``, ``http.request.method_original`` or None) for a method as sent."""
    names = _KNOWN_METHOD_NAMES.get(method)  # the common case, looked up: this runs on every attempt
    if names is not None:
        return names
    upper = method.upper()
    if upper in KNOWN_METHODS:
        return upper, upper, (None if upper == method else method)
    return semconv.HTTP_SPAN_NAME_OTHER, semconv.HTTP_METHOD_OTHER, method


def attempt_attributes(
    method: str, url: str, host: str, port: int | None, *, had_credentials: bool = False
) -> tuple[str, dict[str, Any]]:
    """Span name and the stable HTTP client attributes of one attempt. `url` is redacted: no credentials, and the
    sensitive query parameters the conventions name are ``REDACTED``. `had_credentials`: the URL the app gave carried
    ``user:password@``, which the client moved into a header before this layer; the conventions want it shown as
    ``REDACTED:REDACTED@``."""
    span_name, method_attribute, original = method_names(method)
    if had_credentials and "@" not in url and "://" in url:
        scheme, rest = url.split("://", 1)
        url = f"{scheme}://{errors.REDACTED}:{errors.REDACTED}@{rest}"
    attributes: dict[str, Any] = {
        semconv.HTTP_REQUEST_METHOD: method_attribute,
        semconv.URL_FULL: errors.redact(url),
        semconv.SERVER_ADDRESS: host,
    }
    if port is not None:
        attributes[semconv.SERVER_PORT] = port
    if original is not None:
        attributes[semconv.HTTP_REQUEST_METHOD_ORIGINAL] = original
    return span_name, attributes


def credentials_host(url: str | None) -> str | None:
    """The host of a URL that carries ``user:password@`` (None for any other URL; cheap when there is no ``@``)."""
    if not url or "@" not in url:
        return None
    try:
        parts = urlsplit(url)
        return parts.hostname if parts.username is not None or parts.password is not None else None
    except ValueError:  # not a URL we can read (the client will say so to the app, not us)
        return None


def current_client_span(ctx: Context | None = None) -> Span | None:
    """The recording CLIENT span current in `ctx`, if any: an HTTP request already traced by someone else (contrib's
    instrumentation, or the app's own CLIENT span), inside which we must not open another CLIENT span."""
    span = get_current_span(ctx)
    if span.is_recording() and getattr(span, "kind", None) is SpanKind.CLIENT:
        return span
    return None


class HttpRequest:
    """One logical HTTP request and its attempts. Its methods guard themselves (core/_safety.py), inline: they run on
    every attempt of the client's hot path::

        request = HttpRequest.start(telemetry, "GET", "api.example.com")   # None: nothing records
        ctx = request.attempt_started("GET", url, "api.example.com", 443)  # inject `ctx` into a copy of the headers
        request.attempt_ended(status=503)
        request.retrying(0.5)                                              # the wait the library chose
        ...
        request.ended(semconv.RESULT_SUCCESS)

    Not a `RetryOperation`: it has no operation span, and nearly every request is one successful attempt, where our
    work must stay a fraction of contrib's own span (docs/performance.md).
    """

    __slots__ = (
        "_telemetry", "_method", "_host", "_parent", "_start_ns", "attempts", "is_ended", "credentials_host",
        "container", "error_type", "_in_attempt", "_span", "_ended_attempt", "_resend_event", "_verdict",
        "_looked_in", "_client_span", "joins_any_client",
    )

    @classmethod
    def start(cls, telemetry: Telemetry, method: str, host: str) -> HttpRequest | None:
        """Start observing one logical request (None when nothing records). Its metric points carry ``retry.name``
        ``{METHOD} {host}``: what was retried, at a cardinality the metrics can carry."""
        try:
            ctx = get_current()
            if not telemetry.recording(ctx):
                return None
            return cls(telemetry, method, host, ctx)
        except Exception:
            report_internal_error("otel_resilience.core.http.HttpRequest.start")
            return None

    def __init__(self, telemetry: Telemetry, method: str | None, host: str | None, parent: Context) -> None:
        self._telemetry = telemetry
        self._method = method  # with `_host`, ``retry.name`` of the metric points (a scope's first attempt names them)
        self._host = host
        self._parent = parent  # the caller's context: the attempt spans are siblings under its span
        self._start_ns = time_ns()
        self.attempts = 0
        self.is_ended = False
        self.credentials_host: str | None = None
        """The host of the app's URL when that URL named ``user:password@`` (see `attempt_attributes`)."""
        self.container: Span | None = None
        """Contrib's span holding the running (or last) attempt, if it is shown there rather than on a span of ours."""
        self.error_type: str | None = None
        """The last ended attempt's ``error.type``: its failing status code, or its error's type; None if it succeeded."""
        self._in_attempt = False
        self._span: Span | None = None  # ours, for the running attempt
        self._ended_attempt: EndedAttempt | None = None  # waiting to be reported (`_report`)
        self._resend_event: tuple[dict[str, Any], int] | None = None  # the previous attempt, for the next container
        self._verdict: str | None = None  # what `layer_ended` said
        self._looked_in: Context | None = None  # the context the last attempt started in, and the client span there
        self._client_span: Span | None = None
        self.joins_any_client = False
        """True for a retry loop above the HTTP client whose attempts the client adapters see
        (`core.http_loop.ClientLoop`): the attempts of every client adapter join it, whatever the request's policy."""

    def attempt_started(
        self, method: str, url: str, host: str, port: int | None, *, beside_contrib: bool = False
    ) -> Context | None:
        """An attempt begins now. Returns the context to inject into (a copy of) this attempt's headers, or None when
        no span of ours represents it (beside contrib, whose span carries the trace context already).
        `beside_contrib=True`: contrib will make this attempt's CLIENT span itself, later (see `contrib_span`)."""
        try:
            if self._in_attempt:  # the previous attempt was never reported as ended: it ends as it stands
                self.attempt_ended()
            if self._ended_attempt is not None:
                self._report(follows=True)
            attempts = self.attempts = self.attempts + 1
            self._in_attempt = True
            self._verdict = None  # an inner layer's verdict before this attempt is not the outcome
            self.container = None
            if beside_contrib:
                return None
            container = self._current_client_span()
            if container is not None:
                self._enrich(container)
                return None
            span_name, attributes = self._names(method, url, host, port)
            attributes[semconv.RETRY_ATTEMPT] = attempts
            if attempts > 1:
                attributes[semconv.HTTP_REQUEST_RESEND_COUNT] = attempts - 1
                self._resend_event = None  # the previous attempt's, for a contrib span this attempt is not on
            parent = self._parent
            span = self._span = self._telemetry.tracer.start_span(
                span_name, context=parent, kind=SpanKind.CLIENT, attributes=attributes
            )
            return set_span_in_context(span, parent)
        except Exception:
            report_internal_error("otel_resilience.core.http.HttpRequest.attempt_started")
            return None

    def _names(self, method: str, url: str, host: str, port: int | None) -> tuple[str, dict[str, Any]]:
        """The name and first attributes of an attempt's span (a loop above the client names its attempts after the
        call it retries: `core.http_loop`)."""
        return attempt_attributes(method, url, host, port, had_credentials=host == self.credentials_host)

    def _current_client_span(self) -> Span | None:
        """`current_client_span`, looked up again only when the current context changed since the last attempt:
        the attempts of one urllib3 loop start in the same context (a benchmark row: the lookup costs more than the
        comparison)."""
        ctx = get_current()
        if ctx is not self._looked_in:
            self._looked_in = ctx
            self._client_span = current_client_span(ctx)
        span = self._client_span
        return span if span is None or span.is_recording() else None

    @never_raises
    def contrib_span(self, span: Span) -> None:
        """Contrib's instrumentation made the CLIENT span of the running attempt (``beside_contrib=True``)."""
        if span.is_recording() and getattr(span, "kind", None) is SpanKind.CLIENT:
            self._enrich(span)

    def _enrich(self, container: Span) -> None:
        self.container = container
        resends = self.attempts - 1
        if resends >= 1:
            container.set_attribute(semconv.HTTP_REQUEST_RESEND_COUNT, resends)
        event = self._resend_event
        if event is not None:
            self._resend_event = None
            container.add_event(semconv.HTTP_RESEND_EVENT, event[0], timestamp=event[1])

    def attempt_ended(
        self, *, status: int | None = None, error: BaseException | None = None, end_ns: int | None = None
    ) -> None:
        """The running attempt got a response with `status`, or failed with `error`. Whether another attempt follows
        (and after which wait) is for the library to decide: reported by `retrying`, the next `attempt_started`, or
        `layer_ended`/`ended`. Ignored when no attempt is running, so an adapter may report an end it is unsure of."""
        try:
            if self._in_attempt:
                self._in_attempt = False
                error_type = status_error_type(status) if error is None else errors.error_type(error)
                self.error_type = error_type
                span, self._span = self._span, None
                ended_ns = time_ns() if end_ns is None else end_ns
                self._ended_attempt = EndedAttempt(span, ended_ns, error, error_type, status)
        except Exception:
            report_internal_error("otel_resilience.core.http.HttpRequest.attempt_ended")

    def retrying(self, delay: float | None) -> None:
        """The library will make another attempt after waiting `delay` seconds: the value it chose (backoff with its
        jitter, or the server's ``Retry-After``), never recomputed. None when it waits without saying how long."""
        ended = self._ended_attempt
        if ended is not None:
            ended.delay = delay

    def _report(self, follows: bool, attributes: dict[str, Any] | None = None) -> None:
        """Tell of the ended attempt: another one follows (after the wait `retrying` gave), or it was the last and
        `attributes` are the request's outcome. Our span gets it all in one call and ends; beside contrib, an attempt
        that is followed becomes the ``http.request.resend`` event of the next attempt's contrib span."""
        ended = self._ended_attempt
        assert ended is not None
        self._ended_attempt = None
        ended.delay = (0.0 if ended.delay is None else float(ended.delay)) if follows else None
        if ended.span is not None:
            if attributes is None:
                attributes = {}
            if ended.status is not None:
                attributes[semconv.HTTP_RESPONSE_STATUS_CODE] = ended.status
            ended.failed(self._telemetry.settings)
            ended.report(attributes)
        elif follows:
            event: dict[str, Any] = {semconv.RETRY_ATTEMPT: self.attempts}
            if ended.status is not None:
                event[semconv.HTTP_RESPONSE_STATUS_CODE] = ended.status
            if ended.error_type is not None:
                event[semconv.ERROR_TYPE] = ended.error_type
            event[semconv.RETRY_DELAY] = ended.delay
            self._resend_event = (event, ended.end_ns)

    @never_raises
    def layer_ended(self, result: str) -> None:
        """The layer that made the attempts ended with `result`; an outer loop (a redirect, a resend by an auth
        handler) may still continue the request. Beside contrib, written on contrib's span while it is open."""
        self._verdict = result
        self._write_outcome(result)

    def _write_outcome(self, result: str) -> None:
        container = self.container
        if container is not None and container.is_recording():
            container.set_attributes(self._outcome(result))

    def _outcome(self, result: str) -> dict[str, Any]:
        """What the request's last attempt (or contrib's span) says of the whole request."""
        return {semconv.RETRY_ATTEMPTS: self.attempts, semconv.RETRY_RESULT: result}

    def _record(self, result: str) -> None:
        """The request's retry metric points; ``retry.name`` is ``{METHOD} {host}`` (see `start`)."""
        self._telemetry.record_retry(
            f"{method_names(self._method)[1]} {self._host}",  # type: ignore[arg-type]
            result,
            current_depth(self._parent) + 1,
            self.attempts,
            (time_ns() - self._start_ns) / 1e9,
        )

    def ended(
        self, result: str | None = None, error: BaseException | None = None, error_result: ErrorResult | None = None
    ) -> None:
        """The request is over: `result` (default: what `layer_ended` said), and `error`, the exception that escaped
        to the caller (`error_result` may name its result); `outcome.request_result` decides. A request that succeeded
        at its first attempt records no retry metric points (docs/telemetry.md, "Decisions")."""
        try:
            if self.is_ended:
                return
            self.is_ended = True
            mapped = error_result(error) if error is not None and error_result is not None else None
            if self._in_attempt:  # ended mid-attempt (cancelled, abandoned): the attempt ends as it stands, with `error`
                self.attempt_ended(error=error)
            verdict = self._verdict if result is None else result
            result = outcome.request_result(verdict, error, mapped, self.error_type is not None)
            if self._ended_attempt is not None:
                self._report(False, self._outcome(result))
            if self.container is not None:
                self._write_outcome(result)
            if self.attempts != 1 or result != semconv.RESULT_SUCCESS:
                self._record(result)
        except Exception:
            report_internal_error("otel_resilience.core.http.HttpRequest.ended")


# --- scopes: the library's outer loop --------------------------------------------------------------------------------

_SCOPE: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar("otel_resilience_http_scope", default=None)
"""The request of the outer call in progress in this thread or task (requests' ``Session.request``, a pool manager's
``urlopen``, httpx's ``Client.send``): every attempt made inside belongs to it. None inside an outer call while
nothing records there (instrumentation suppressed), so that its attempts do not join a request of an outer call."""

UrlOf = Callable[[tuple[Any, ...], dict[str, Any]], Any]
"""The URL the app gave to an outer call, read from its arguments (anything but a str counts as none)."""

ScopeWrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


def request_in_scope(
    telemetry: Telemetry, method: str, host: str, *, retried: bool = True
) -> tuple[HttpRequest | None, bool]:
    """The request an attempt starting now belongs to, and whether a scope owns it (then the scope ends it; the
    adapter only reports `layer_ended`). Outside any scope of this library, a new request the adapter ends itself.

    `retried=False`: the request's own policy makes no retries (urllib3 ``retries=False``, ``Retry(0)``; an httpx
    transport with ``retries=0``): it is not a retried operation, and we observe nothing of it (None). Outside any
    retry loop of ours it is a plain request, which HTTP instrumentation traces, not retry instrumentation: no
    ``retry.*`` attributes, no retry metric points, a contrib span left as contrib made it. Inside a loop of ours
    (tenacity, a target, botocore: `core.http_loop`) it is an attempt of that loop, which that loop shows: a
    `ClientLoop` (an SDK's loop, httpx-retries') is current here and the attempt joins it, whatever `retried` says.
    docs/telemetry.md ("Requests that are not retried") has the reasons."""
    request = _SCOPE.get()
    if request is not None and (request.joins_any_client or retried and request._telemetry is telemetry):
        if request._method is None:  # its first attempt names it (``retry.name``: see `HttpRequest.start`)
            request._method = method
            request._host = host
        return request, True
    if not retried:
        return None, False
    return HttpRequest.start(telemetry, method, host), False  # it guards itself; the lines above only read and set


def opens_scope(telemetry: Telemetry) -> Callable[[], bool]:
    """The ``enabled`` check of a patched outer call that joins the scope it runs in (a pool manager's redirect
    recursion, an adapter inside a session): the wrapper, which opens a scope, runs only outside any scope of this
    library and when something may record. Made for the hot path: joining costs this check and nothing else."""
    may_record = telemetry.may_record

    def check() -> bool:
        request = _SCOPE.get()
        return (request is None or request._telemetry is not telemetry) and may_record()

    return check


def _scope_started(
    telemetry: Telemetry, url: Any, afresh: contextvars.ContextVar[Any] | None
) -> tuple[HttpRequest | None, contextvars.Token[Any], contextvars.Token[Any] | None]:
    """A scope opens: its request (None when nothing records here) is made current, and `afresh` is None inside."""
    ctx = get_current()
    request = None
    if telemetry.recording(ctx):
        current = _SCOPE.get()
        if current is not None and current.joins_any_client:  # a loop above the client: its requests are attempts
            return None, _SCOPE.set(current), (None if afresh is None else afresh.set(None))
        request = HttpRequest(telemetry, None, None, ctx)
        request.credentials_host = credentials_host(url if isinstance(url, str) else None)
    return request, _SCOPE.set(request), (None if afresh is None else afresh.set(None))


def _scope_ended(
    opened: tuple[HttpRequest | None, contextvars.Token[Any], contextvars.Token[Any] | None],
    afresh: contextvars.ContextVar[Any] | None,
    error: BaseException | None,
    error_result: ErrorResult | None,
) -> None:
    """The outer call returned (or raised `error`): what was current before is again, and the scope's request, if
    any attempt was made, is over. Never raises (guarded inline, as every per-request step here)."""
    try:
        request, token, afresh_token = opened
        _SCOPE.reset(token)
        if afresh_token is not None:
            afresh.reset(afresh_token)  # type: ignore[union-attr]
        if request is not None and request.attempts:
            request.ended(error=error, error_result=error_result)
    except Exception:
        report_internal_error("core.http: a scope closes")


def scope_wrapper(
    telemetry: Telemetry,
    url_of: UrlOf,
    *,
    error_result: ErrorResult | None = None,
    afresh: contextvars.ContextVar[Any] | None = None,
) -> ScopeWrapper:
    """The patch wrapper of a library's outer call: each call is a scope, a new request, also inside a scope of the
    same library (a session request made by a hook while another is in progress is a request of its own; an outer
    call that joins the scope it runs in is patched with `opens_scope` as its check). Credentials in the URL the app
    gave (`url_of`) are shown as ``REDACTED:REDACTED@`` on the attempts. `afresh` is the adapter's own context
    variable for the state of one run of the library's inner loop: None inside the scope, restored after it."""

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:  # inline, not `never_raises`: this runs on every request
            opened = _scope_started(telemetry, url_of(args, kwargs), afresh)
        except Exception:
            report_internal_error("core.http: a scope opens")
            return wrapped(*args, **kwargs)
        try:
            value = wrapped(*args, **kwargs)
        except BaseException as exc:
            _scope_ended(opened, afresh, exc, error_result)
            raise
        _scope_ended(opened, afresh, None, error_result)
        return value

    return wrapper


# The async scope wrapper is the sync one's twin, kept beside it: one awaits the outer call, the other calls it.
def async_scope_wrapper(
    telemetry: Telemetry, url_of: UrlOf, *, error_result: ErrorResult | None = None
) -> ScopeWrapper:
    """`scope_wrapper` for a coroutine function (the scope lives in the task's context)."""

    async def wrapper(
        wrapped: Callable[..., Awaitable[Any]], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        try:
            opened = _scope_started(telemetry, url_of(args, kwargs), None)
        except Exception:
            report_internal_error("core.http: a scope opens")
            return await wrapped(*args, **kwargs)
        try:
            value = await wrapped(*args, **kwargs)
        except BaseException as exc:
            _scope_ended(opened, None, exc, error_result)
            raise
        _scope_ended(opened, None, None, error_result)
        return value

    return wrapper
