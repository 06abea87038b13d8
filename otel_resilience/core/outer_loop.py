"""Retry loops above the HTTP client: a loop that sends each attempt as a new request through an HTTP client whose own
policy makes no retries (the OpenAI and Anthropic SDKs' ``request`` loop, httpx-retries' ``RetryTransport``).

The rule: such a request is not a retried operation of its own; inside a loop we instrument it is an attempt of that
loop. So the loop is one `HttpRequest` (an `OuterLoop`), current while the loop runs, and every HTTP attempt made
inside it (whatever client adapter of ours sees it: httpx, httpx2, urllib3) joins it, exactly as the attempts inside
a client's own outer loop join that loop's scope (`core.http`). The client adapters need no change:

- the attempt's number and ``http.request.resend_count`` are the loop's (a redirect the client follows inside one
  attempt is a resend too, as everywhere else);
- the wait is the one the loop chose: its adapter reports it with `OuterLoop.retrying`, read from the loop's own
  decision (never recomputed);
- the inner client's verdict on one request (a 503 it does not retry) is a partial view and is ignored
  (`OuterLoop.settle`); the loop's adapter gives the result when the loop ends (`close`), written on the last attempt
  with ``retry.attempts``, ``retry.max_attempts`` (the loop's limit) and ``retry.result``;
- the attempts hang under the span current when the loop started (an API-call span such as a GenAI instrumentation's,
  or the SDK's own): that span is the loop's parent, never taken for contrib's HTTP span of an attempt;
- a loop started inside another loop (an httpx-retries transport under an SDK's loop) joins the outer one: its waits
  are the outer loop's waits, and only the outermost loop says the result.

Usage, in an adapter's wrapper of the loop:

    opened = outer_loop.open(telemetry, max_attempts=max_retries + 1)   # after its policy says it retries at all
    try:
        value = wrapped(*args, **kwargs)      # inside: outer_loop.current().retrying(delay) where the loop waits
    except BaseException as exc:
        outer_loop.close(opened, result_of(exc), exc)
        raise
    outer_loop.close(opened, semconv.RESULT_SUCCESS, None)
"""

from __future__ import annotations

import contextvars
from typing import Any

from opentelemetry.context import get_current
from opentelemetry.trace import Span, get_current_span

from otel_resilience import semconv
from otel_resilience.core._safety import report_internal_error
from otel_resilience.core.http import _SCOPE, HttpRequest
from otel_resilience.core.telemetry import Telemetry

Opened = tuple["OuterLoop | None", "contextvars.Token[Any] | None"]


class OuterLoop(HttpRequest):
    """One run of a retry loop above the HTTP client, and the HTTP attempts made inside it."""

    joins_any_client = True
    max_attempts: int | None = None
    """The loop's limit on tries (``max_retries + 1``), when its policy states one."""
    retries = 0
    """How many times the loop decided to try again (`retrying`): its own count, whatever the client resent inside."""

    def __init__(self, telemetry: Telemetry, max_attempts: int | None) -> None:
        ctx = get_current()
        super().__init__(telemetry, None, None, ctx)
        self.max_attempts = max_attempts
        self._parent_span = get_current_span(ctx)

    def retrying(self, delay: float | None) -> None:
        """The loop will try again after `delay` seconds (its own choice, as it chose it)."""
        self.retries += 1
        super().retrying(delay)

    def settle(self, result: str) -> None:
        """An HTTP client's verdict on the one request it sent: a partial view; the loop decides (`close`)."""

    def _current_client_span(self) -> Span | None:
        span = super()._current_client_span()
        return None if span is self._parent_span else span

    def _report(self, follows: bool, outcome: dict[str, Any] | None = None) -> None:
        if outcome is not None and self.max_attempts is not None:
            outcome[semconv.RETRY_MAX_ATTEMPTS] = self.max_attempts
        super()._report(follows, outcome)

    def _write_outcome(self, result: str) -> None:
        container = self.container
        if container is not None and container.is_recording():
            outcome: dict[str, Any] = {semconv.RETRY_ATTEMPTS: self.attempts, semconv.RETRY_RESULT: result}
            if self.max_attempts is not None:
                outcome[semconv.RETRY_MAX_ATTEMPTS] = self.max_attempts
            container.set_attributes(outcome)


def current() -> OuterLoop | None:
    """The loop whose attempt is running here, if any (where the loop's adapter reports its wait)."""
    request = _SCOPE.get()
    return request if isinstance(request, OuterLoop) else None


def open(telemetry: Telemetry, max_attempts: int | None) -> Opened:  # noqa: A001 - read as outer_loop.open
    """The loop starts: its `OuterLoop` is current until `close` (None when nothing records here, or when it runs
    inside another loop, which it then joins). Never raises."""
    try:
        if current() is not None or not telemetry.recording():
            return None, None
        loop = OuterLoop(telemetry, max_attempts)
        return loop, _SCOPE.set(loop)
    except Exception:
        report_internal_error("core.outer_loop: a loop opens")
        return None, None


def close(opened: Opened, result: str | None, error: BaseException | None) -> None:
    """The loop returned or raised `error`; `result` is its verdict (None: inferred from the last attempt). Never
    raises."""
    try:
        loop, token = opened
        if token is not None:
            _SCOPE.reset(token)
        if loop is not None and loop.attempts:
            loop.ended(result, error)
    except Exception:
        report_internal_error("core.outer_loop: a loop closes")
