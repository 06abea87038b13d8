"""Retry loops above the HTTP client (botocore's ``Endpoint._send_request``, the OpenAI and Anthropic SDKs' loop,
httpx-retries' transport): each HTTP request such a loop sends makes no retries of its own, so `core.http` does not
observe it as a retried operation; it is an attempt of the loop. `LoopCall` is a loop whose adapter sees each attempt
(botocore: CLIENT spans named after the call, ``S3.ListBuckets``, or facts on contrib's span for the whole call);
`ClientLoop` is a loop whose attempts the HTTP client adapters see, because it is current in `core.http`'s scope
while it runs (the SDKs, which build and send each try in methods of their own). Both reuse `HttpRequest`'s
bookkeeping; the shapes, with the reasons, are in docs/http.md (its botocore section and
"Retry loops above the HTTP client")."""

from __future__ import annotations

import contextvars
from time import time_ns
from typing import Any

from opentelemetry.context import _SUPPRESS_HTTP_INSTRUMENTATION_KEY, Context, get_current, set_value
from opentelemetry.trace import Span, SpanKind, get_current_span

from otel_resilience import semconv
from otel_resilience.core._safety import report_internal_error
from otel_resilience.core.http import _SCOPE, HttpRequest, attempt_attributes
from otel_resilience.core.retry import current_depth
from otel_resilience.core.telemetry import Telemetry


def call_span(ctx: Context) -> Span | None:
    """The span that already represents a whole call in `ctx`, if any: a recording CLIENT span (contrib's, or the
    app's own), or a recording span of any kind under which HTTP instrumentation is suppressed (an SDK
    instrumentation took the call's HTTP for itself: contrib's botocore PRODUCER span for SQS ``SendMessage``)."""
    span = get_current_span(ctx)
    if not span.is_recording():
        return None
    if getattr(span, "kind", None) is SpanKind.CLIENT or ctx.get(_SUPPRESS_HTTP_INSTRUMENTATION_KEY):
        return span
    return None


def attempt_context(ctx: Context) -> Context:
    """The context an attempt of ours runs in: its span current (from `LoopCall.attempt_started`), and HTTP
    instrumentation suppressed, so that no HTTP client instrumentation opens a CLIENT span inside our CLIENT span.
    Our own HTTP adapters honour only the general suppression, and see a request that makes no retries anyway."""
    return set_value(_SUPPRESS_HTTP_INSTRUMENTATION_KEY, True, ctx)


class LoopCall(HttpRequest):
    """One call of a retry loop above the HTTP client, from its first attempt to its result. Started by `start`; the
    loop's adapter reports attempts, waits and the result as `HttpRequest` documents (its methods guard themselves),
    and sets `max_attempts` and `budget_exhausted` before `ended`."""

    __slots__ = ("name", "_call_attributes", "_container", "max_attempts", "budget_exhausted")

    @classmethod
    def start(  # type: ignore[override]
        cls, telemetry: Telemetry, name: str, attributes: dict[str, Any]
    ) -> LoopCall | None:
        """Start observing one call of a retry loop above the HTTP client (None when nothing records). `name` is the
        call's (``S3.ListBuckets``): the attempt spans' name and ``retry.name`` of the metric points; `attributes` go
        on each attempt span of ours (never on contrib's span, which has its own)."""
        try:
            ctx = get_current()
            if not telemetry.recording(ctx):
                return None
            return cls(telemetry, name, attributes, ctx, call_span(ctx))
        except Exception:
            report_internal_error("otel_resilience.core.http_loop.LoopCall.start")
            return None

    def __init__(
        self, telemetry: Telemetry, name: str, attributes: dict[str, Any], parent: Context, container: Span | None
    ) -> None:
        super().__init__(telemetry, None, None, parent)
        self.name = name
        self._call_attributes = attributes
        self._container = container
        self.max_attempts: int | None = None
        """The loop's attempt limit, as the loop resolved it (written with the outcome)."""
        self.budget_exhausted = False
        """A retry budget refused the retry that would have followed (botocore's retry quota)."""

    def _names(self, method: str, url: str, host: str, port: int | None) -> tuple[str, dict[str, Any]]:
        attributes = dict(self._call_attributes)
        attributes.update(attempt_attributes(method, url, host, port)[1])
        return self.name, attributes

    def _current_client_span(self) -> Span | None:
        """The call's span, found when the loop started (the attempts run inside the loop, in its context)."""
        span = self._container
        return span if span is not None and span.is_recording() else None

    def _outcome(self, result: str) -> dict[str, Any]:
        outcome = super()._outcome(result)
        if self.max_attempts is not None:
            outcome[semconv.RETRY_MAX_ATTEMPTS] = self.max_attempts
        if self.budget_exhausted:
            outcome[semconv.RETRY_BUDGET_EXHAUSTED] = True
        return outcome

    def _record(self, result: str) -> None:
        self._telemetry.record_retry(
            self.name,
            result,
            current_depth(self._parent) + 1,
            self.attempts,
            (time_ns() - self._start_ns) / 1e9,
            budget_exhausted=self.budget_exhausted,
        )


# --- loops whose attempts the HTTP client adapters see -----------------------------------------------------------------


class ClientLoop(LoopCall):
    """One run of a retry loop above the HTTP client whose attempts our HTTP client adapters report (see the module's
    docstring). Named and recorded as an HTTP request (``POST``; ``retry.name`` ``{METHOD} {host}``), with the loop's
    ``retry.max_attempts``. Current in `core.http`'s scope from `start` to `end_client_loop`."""

    __slots__ = ("retries", "_parent_span", "_scope_token")

    @classmethod
    def start(  # type: ignore[override]
        cls, telemetry: Telemetry, max_attempts: int | None
    ) -> ClientLoop | None:
        """The loop starts (its policy retries: `max_attempts` > 1) and is current until `end_client_loop`; None when
        nothing records here, or inside another loop, which it then joins."""
        try:
            ctx = get_current()
            if current_client_loop() is not None or not telemetry.recording(ctx):
                return None
            loop = cls(telemetry, max_attempts, ctx)
            loop._scope_token = _SCOPE.set(loop)
            return loop
        except Exception:
            report_internal_error("otel_resilience.core.http_loop.ClientLoop.start")
            return None

    def __init__(self, telemetry: Telemetry, max_attempts: int | None, parent: Context) -> None:
        super().__init__(telemetry, "", {}, parent, None)
        self.joins_any_client = True
        self.max_attempts = max_attempts
        self.retries = 0
        """How many times the loop decided to try again (`retrying`): its own count, whatever the client resent."""
        self._parent_span = get_current_span(parent)
        self._scope_token: contextvars.Token[HttpRequest | None] | None = None

    def _names(self, method: str, url: str, host: str, port: int | None) -> tuple[str, dict[str, Any]]:
        return HttpRequest._names(self, method, url, host, port)

    def _current_client_span(self) -> Span | None:
        """Contrib's HTTP span of the running attempt, never the API-call span the loop runs under."""
        span = HttpRequest._current_client_span(self)
        return None if span is self._parent_span else span

    def _record(self, result: str) -> None:
        HttpRequest._record(self, result)

    def retrying(self, delay: float | None) -> None:
        """The loop decided to try again after `delay` seconds (its own choice, read from its decision)."""
        self.retries += 1
        super().retrying(delay)

    def waited(self, delay: float | None) -> None:
        """A loop inside this one's try (which joined it) waits `delay` before resending: the wait after the last
        attempt, but not a retry of this loop (its count, which its result may depend on, is unchanged)."""
        super().retrying(delay)

    def layer_ended(self, result: str) -> None:
        """An HTTP client's verdict on the one request it sent: a partial view; the loop decides."""


def current_client_loop() -> ClientLoop | None:
    """The loop whose attempt is running here, if any (where the loop's adapter reports its wait)."""
    request = _SCOPE.get()
    return request if isinstance(request, ClientLoop) else None


def end_client_loop(loop: ClientLoop | None, result: str | None, error: BaseException | None) -> None:
    """The loop returned, or raised `error`; `result` is its own verdict, named by `core.outcome` (None: inferred
    from the last attempt). The scope is put back first, whatever happens after, so that an error of ours never leaves
    the loop current after the call. Never raises."""
    if loop is None:
        return
    try:
        token, loop._scope_token = loop._scope_token, None
        if token is not None:
            _SCOPE.reset(token)
    except Exception:
        report_internal_error("core.http_loop: a loop's scope ends")
    try:
        if loop.attempts:
            loop.ended(result, error)
    except Exception:
        report_internal_error("core.http_loop: a loop ends")
