"""HTTP attempts: library-neutral. Every attempt of one logical request (its retries, resends and redirects) becomes
one CLIENT span, or, beside contrib's HTTP instrumentation, facts on the CLIENT span contrib made.

An HTTP adapter reports what its client did; this module alone decides the shape (``docs/http.md`` has the reasons):

    request = request_in_scope(telemetry, "GET", "api.example.com")       # None: nothing records, stay out of the way
    ctx = request.attempt_started("GET", url, "api.example.com", 443)
    if ctx is not None:
        inject(headers_copy, context=ctx)                                  # the server's spans hang under this attempt
    ...
    request.attempt_ended(status=503)
    request.retrying(0.5)                                                  # the wait the library chose, as it chose it
    request.attempt_started(...)
    request.attempt_ended(status=200)
    request.ended(semconv.RESULT_SUCCESS)

Shapes:

- **Alone** (no CLIENT span is current when the attempt starts): each attempt is its own CLIENT span named by the
  method, a sibling under the caller's span (no operation span), with the stable HTTP attributes, ``retry.attempt``,
  ``http.request.resend_count`` from the 2nd attempt on and ``retry.delay`` when another attempt follows; the last
  attempt carries ``retry.attempts`` and ``retry.result``. The caller injects the attempt's context into a copy of
  the request headers.
- **Beside a CLIENT span already current** (contrib's requests, urllib3 or httpx instrumentation made one span for the
  whole request, or for one redirect hop): we make no span. That span gets ``http.request.resend_count`` (resends so
  far), one ``http.request.resend`` event per earlier attempt (``retry.attempt``, ``http.response.status_code`` or
  ``error.type``, ``retry.delay``), and ``retry.attempts``/``retry.result`` while it is still open when the request
  settles. Contrib already injected its own span's context: we inject nothing.
- **Beside a CLIENT span made inside each attempt** (contrib's aiohttp-client under aiohttp-retry): the adapter says
  so (``beside_contrib=True``) and hands over contrib's span with `contrib_span` once it exists; it is enriched the
  same way. Contrib ends that span before the library chooses its wait, so the wait after attempt *k* is on the
  ``http.request.resend`` event that attempt *k+1*'s span carries.

Where the library has an outer loop of its own (requests' redirects, a pool manager's cross-host redirects, httpx's
``Client.send``), the adapter brackets it with `call_in_scope`/`acall_in_scope`: attempts made inside join one request,
so redirects count as resends, and the request ends when the outer call returns. Inside a scope, what the inner layer
knows (its verdict) is recorded with `settle`; beside contrib, it is written on contrib's span while that is open.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from time import time_ns
from typing import Any, Final
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, get_current_span

from otel_resilience import semconv
from otel_resilience.core import errors
from otel_resilience.core._safety import never_raises
from otel_resilience.core.retry import RetryOperation
from otel_resilience.core.telemetry import Telemetry

KNOWN_METHODS: Final = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY")
)
"""The methods the HTTP conventions name (RFC 9110, 5789 and the QUERY draft); others are ``_OTHER``."""

DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}

ErrorResult = Callable[[BaseException], "str | None"]
"""Maps an exception escaping a scope to a `retry.result` when the adapter knows better (requests' TooManyRedirects is
``exhausted``); None leaves the decision to `HttpRequest.ended`."""


def default_port(scheme: str) -> int | None:
    return DEFAULT_PORTS.get(scheme.lower())


def absolute_url(scheme: str, host: str, port: int | None, target: str) -> str:
    """The URL of a request given as origin + request target (what a connection pool sends): an absolute target
    (a proxy's absolute form) is the URL itself; the default port is left out, as in the URL the user wrote."""
    if not target.startswith("/"):
        return target
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != default_port(scheme):
        netloc = f"{netloc}:{port}"
    return f"{scheme}://{netloc}{target}"


def method_names(method: str) -> tuple[str, str, str | None]:
    """(span name, ``http.request.method``, ``http.request.method_original`` or None) for a method as sent."""
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


def status_error_type(status: int | None) -> str | None:
    """An HTTP client attempt failed when the status is 4xx or 5xx: `error.type` is the code as a string."""
    return str(status) if status is not None and status >= 400 else None


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


class _EndedAttempt:
    """What an attempt's end told us, held until we know whether (and after which wait) another attempt follows."""

    __slots__ = ("number", "status", "error", "end_ns")

    def __init__(self, number: int, status: int | None, error: BaseException | None, end_ns: int) -> None:
        self.number = number
        self.status = status
        self.error = error
        self.end_ns = end_ns


class HttpRequest:
    """One logical HTTP request and its attempts. Created by `start_request` or `request_in_scope`."""

    __slots__ = (
        "_op",
        "_ended_attempt",
        "_delay",
        "_result",
        "_own_span",
        "_container",
        "_resend_event",
        "credentials_host",
    )

    def __init__(self, op: RetryOperation) -> None:
        self._op = op
        self.credentials_host: str | None = None  # the app's URL named credentials for this host (see attributes)
        self._ended_attempt: _EndedAttempt | None = None
        self._delay: float | None = None
        self._result: str | None = None
        self._own_span = False  # whether the running (or last) attempt is a span of ours
        self._container: Span | None = None  # contrib's span holding the running (or last) attempt
        self._resend_event: tuple[dict[str, Any], int] | None = None  # the previous attempt, for the next container

    @property
    def attempts(self) -> int:
        return self._op.attempts

    @property
    def is_ended(self) -> bool:
        return self._op.is_ended

    @never_raises
    def attempt_started(
        self, method: str, url: str, host: str, port: int | None, *, beside_contrib: bool = False
    ) -> Context | None:
        """An attempt begins now. Returns the context to inject into (a copy of) this attempt's headers, or None when
        no span of ours represents it (beside contrib, whose span carries the trace context already).
        `beside_contrib=True`: contrib will make this attempt's CLIENT span itself, later (see `contrib_span`)."""
        self._report_ended_attempt(follows=True)
        op = self._op
        container = None if beside_contrib else current_client_span()
        if container is None and not beside_contrib:
            span_name, attributes = attempt_attributes(
                method, url, host, port, had_credentials=host == self.credentials_host
            )
            if op.attempts >= 1:
                attributes[semconv.HTTP_REQUEST_RESEND_COUNT] = op.attempts
            op.attempt_started(span_name=span_name, attributes=attributes)
            self._own_span = True
            self._container = None
            self._resend_event = None
            return op.attempt_context
        op.attempt_started(span=False)
        self._own_span = False
        self._container = None
        if container is not None:
            self._enrich(container)
        return None

    @never_raises
    def contrib_span(self, span: Span) -> None:
        """Contrib's instrumentation made the CLIENT span of the running attempt (``beside_contrib=True``)."""
        if span.is_recording() and getattr(span, "kind", None) is SpanKind.CLIENT:
            self._enrich(span)

    def _enrich(self, container: Span) -> None:
        self._container = container
        resends = self._op.attempts - 1
        if resends >= 1:
            container.set_attribute(semconv.HTTP_REQUEST_RESEND_COUNT, resends)
        event = self._resend_event
        if event is not None:
            self._resend_event = None
            container.add_event(semconv.HTTP_RESEND_EVENT, event[0], timestamp=event[1])

    @never_raises
    def attempt_ended(
        self, *, status: int | None = None, error: BaseException | None = None, end_ns: int | None = None
    ) -> None:
        """The running attempt got a response with `status`, or failed with `error`. Whether another attempt follows
        (and after which wait) is for the library to decide: reported by `retrying`, the next `attempt_started`, or
        `settle`/`ended`."""
        if not self._op.in_attempt:
            return
        self._ended_attempt = _EndedAttempt(self._op.attempts, status, error, time_ns() if end_ns is None else end_ns)
        self._delay = None

    def retrying(self, delay: float | None) -> None:
        """The library will make another attempt after waiting `delay` seconds: the value it chose (backoff with its
        jitter, or the server's ``Retry-After``), never recomputed. None when it waits without saying how long."""
        self._delay = delay

    def _report_ended_attempt(self, follows: bool) -> None:
        ended = self._ended_attempt
        if ended is None:
            return
        self._ended_attempt = None
        delay = (0.0 if self._delay is None else float(self._delay)) if follows else None
        self._delay = None
        error_type = status_error_type(ended.status)
        attributes = None if ended.status is None else {semconv.HTTP_RESPONSE_STATUS_CODE: ended.status}
        self._op.attempt_ended(
            ended.error, error_type=error_type, next_delay=delay, attributes=attributes, end_ns=ended.end_ns
        )
        self._resend_event = None
        if follows and not self._own_span:  # shown beside contrib: the next attempt's contrib span tells of it
            event: dict[str, Any] = {semconv.RETRY_ATTEMPT: ended.number}
            if ended.status is not None:
                event[semconv.HTTP_RESPONSE_STATUS_CODE] = ended.status
            if error_type is None and ended.error is not None:
                error_type = errors.error_type(ended.error)
            if error_type is not None:
                event[semconv.ERROR_TYPE] = error_type
            if delay is not None:
                event[semconv.RETRY_DELAY] = delay
            self._resend_event = (event, ended.end_ns)

    @never_raises
    def settle(self, result: str) -> None:
        """The layer that made the attempts is done with `result`; an outer loop (a redirect, a resend by an auth
        handler) may still continue the request. Beside contrib, written on contrib's span while it is open."""
        self._result = result
        self._write_outcome(result)

    def _write_outcome(self, result: str) -> None:
        container = self._container
        if container is not None and container.is_recording():
            container.set_attributes({semconv.RETRY_ATTEMPTS: self._op.attempts, semconv.RETRY_RESULT: result})

    @never_raises
    def ended(
        self, result: str | None = None, error: BaseException | None = None, error_result: ErrorResult | None = None
    ) -> None:
        """The request is over: `result` (default: what `settle` said, else inferred) and `error`, the exception that
        escaped to the caller. An error escaping after a settled success was not retried by anyone."""
        if result is None:
            result = self._result
        if error is not None:
            mapped = error_result(error) if error_result is not None else None
            if mapped is not None:
                result = mapped
            elif result == semconv.RESULT_SUCCESS:
                result = semconv.RESULT_NOT_RETRIED
        self._report_ended_attempt(follows=False)
        recorded = self._op.ended(result, error)
        if recorded is not None:
            self._write_outcome(recorded)


def start_request(telemetry: Telemetry, method: str, host: str) -> HttpRequest | None:
    """Start observing one logical request (None when nothing records). ``retry.name`` is ``{METHOD} {host}``: what
    was retried, at a cardinality the metrics can carry. A request that succeeds at its first attempt records no
    retry metric points: recording them was most of an attempt's cost (docs/telemetry.md, "Decisions")."""
    span_name, method_attribute, _ = method_names(method)
    op = telemetry.start_retry(
        f"{method_attribute} {host}",
        span_name=span_name,
        operation_span=False,
        attempt_kind=SpanKind.CLIENT,
        metrics_on_first_success=False,  # the common request: its count and latency are HTTP metrics' job
    )
    return None if op is None else HttpRequest(op)


# --- scopes: the library's outer loop --------------------------------------------------------------------------------


class RequestScope:
    """One outer call of an HTTP library in progress in this thread or task (requests' ``Session.request``, a pool
    manager's ``urlopen``, httpx's ``Client.send``): every attempt made inside belongs to its one request."""

    __slots__ = ("library", "request", "credentials_host")

    def __init__(self, library: str, url: str | None) -> None:
        self.library = library
        self.request: HttpRequest | None = None
        self.credentials_host = credentials_host(url)

    def close(self, error: BaseException | None, error_result: ErrorResult | None) -> None:
        request = self.request
        if request is not None:
            request.ended(error=error, error_result=error_result)


_SCOPE: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar("otel_resilience_http_scope", default=None)


def request_in_scope(telemetry: Telemetry, method: str, host: str) -> tuple[HttpRequest | None, bool]:
    """The request an attempt starting now belongs to, and whether a scope owns it (then the scope ends it; the
    adapter only `settle`s). Outside any scope of this library, a new request the adapter ends itself."""
    scope = _SCOPE.get()
    if scope is not None and scope.library == telemetry.library:
        request = scope.request
        if request is None or request.is_ended:
            request = scope.request = start_request(telemetry, method, host)
            if request is not None:
                request.credentials_host = scope.credentials_host
        return request, True
    return start_request(telemetry, method, host), False


@never_raises
def _enter(
    library: str, join: bool, url: str | None
) -> tuple[RequestScope, contextvars.Token[RequestScope | None]] | None:
    """A new scope made current, or None to run the call as it is (joining the current scope, or after an error of
    ours)."""
    current = _SCOPE.get()
    if join and current is not None and current.library == library:
        return None
    scope = RequestScope(library, url)
    return scope, _SCOPE.set(scope)


def _leave(
    entered: tuple[RequestScope, contextvars.Token[RequestScope | None]],
    error: BaseException | None,
    error_result: ErrorResult | None,
) -> None:
    scope, token = entered
    _SCOPE.reset(token)
    scope.close(error, error_result)


def call_in_scope(
    library: str,
    wrapped: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    join: bool,
    error_result: ErrorResult | None = None,
    url: str | None = None,
) -> Any:
    """Run the library's outer call as a scope. `join=True`: inside a scope of the same library already (a pool
    manager's redirect recursion, an adapter inside a session), just take part in it; `join=False`: always a new
    request (a session request made by a hook while another is in progress is a request of its own). `url` is the
    URL the app gave, if the call has one: credentials in it are shown as ``REDACTED:REDACTED@`` on the attempts."""
    entered = _enter(library, join, url)
    if entered is None:
        return wrapped(*args, **kwargs)
    try:
        value = wrapped(*args, **kwargs)
    except BaseException as exc:
        _leave(entered, exc, error_result)
        raise
    _leave(entered, None, error_result)
    return value


async def acall_in_scope(
    library: str,
    wrapped: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    join: bool,
    error_result: ErrorResult | None = None,
    url: str | None = None,
) -> Any:
    """`call_in_scope` for a coroutine function (the scope lives in the task's context)."""
    entered = _enter(library, join, url)
    if entered is None:
        return await wrapped(*args, **kwargs)
    try:
        value = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _leave(entered, exc, error_result)
        raise
    _leave(entered, None, error_result)
    return value
