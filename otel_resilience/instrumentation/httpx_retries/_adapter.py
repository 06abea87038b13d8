"""Translate httpx-retries' ``RetryTransport`` into a loop above the HTTP client (`core.http_loop.ClientLoop`): it
sends each try through the httpx transport it wraps, whose pool our httpx adapter sees, so those requests are the
loop's attempts. ``handle_request`` / ``handle_async_request`` are the loop (when the ``Retry`` in force retries the
method at all), ``Retry.sleep`` / ``asleep`` give its own waits, never recomputed. Hooks and the result rules:
docs/http.md, "Retry loops above the HTTP client"."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import httpx_retries

from otel_resilience.core import Telemetry, never_raises, outcome, report_internal_error
from otel_resilience.core.bracket import bracketing
from otel_resilience.core.http_loop import ClientLoop, current_client_loop, end_client_loop
from otel_resilience.patching import Patches


class _Run:
    """One run of ``RetryTransport``'s loop: the ``Retry`` in force (httpx-retries makes a new one per retry), and the
    loop of ours it opened (None when it joined an outer loop, or nothing records)."""

    __slots__ = ("policy", "loop")

    def __init__(self, policy: Any, loop: ClientLoop | None) -> None:
        self.policy = policy
        self.loop = loop


_RUN: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("otel_resilience_httpx_retries_run", default=None)

_WAIT: contextvars.ContextVar[list[float | None] | None] = contextvars.ContextVar(
    "otel_resilience_httpx_retries_wait", default=None
)
"""While ``Retry.sleep``/``asleep`` runs in a loop of ours: a one-item list (truthy, the hook's check), the wait
``_calculate_sleep`` gave it."""


class HttpxRetriesAdapter:
    """Holds the Telemetry for httpx-retries and installs the hooks."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch(self, patches: Patches) -> None:
        """The loop; deferred until something records: the wait hooks (they act only inside a loop of ours)."""
        may_record = self.telemetry.may_record
        transport, retry = httpx_retries.RetryTransport, httpx_retries.Retry
        loop, async_loop = bracketing(self._open, _close)
        patches.wrap(transport, "handle_request", loop, enabled=may_record)
        patches.wrap(transport, "handle_async_request", async_loop, enabled=may_record)
        patches.wrap(retry, "sleep", _observe_sleep, enabled=_RUN.get, deferred=True)
        patches.wrap(retry, "asleep", _observe_async_sleep, enabled=_RUN.get, deferred=True)
        patches.wrap(retry, "_calculate_sleep", _observe_wait, enabled=_WAIT.get, deferred=True)

    @never_raises
    def _open(
        self, transport: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[_Run, contextvars.Token[Any]] | None:
        request = args[0] if args else kwargs["request"]
        policy = request.extensions.get("retry", transport.retry)
        if policy.total <= 0 or not policy.is_retryable_method(request.method):
            return None  # its policy makes no retries for this request: a plain one
        run = _Run(policy, ClientLoop.start(self.telemetry, policy.total + 1))
        return run, _RUN.set(run)


def _close(state: tuple[_Run, contextvars.Token[Any]], response: Any, error: BaseException | None) -> None:
    """The loop is over: our state, then the scope (`end_client_loop`, guarded itself), are put back whatever
    happens in between, so that an error of ours never leaves the loop current after the call."""
    run, token = state
    _RUN.reset(token)
    if run.loop is None:  # joined an outer loop (which ends it), or nothing records
        return
    try:
        result = _verdict(run.policy, response, error)
    except Exception:
        report_internal_error("instrumentation.httpx_retries: the loop's verdict")
        result = None
    end_client_loop(run.loop, result, error)


def _verdict(policy: Any, response: Any, error: BaseException | None) -> str:
    """httpx-retries' own verdict: it gives up on an error it retries once ``is_exhausted()``, and returns a status
    it retries only when its retries are spent."""
    if error is not None:
        spent = isinstance(error, Exception) and policy.is_exhausted() and policy.is_retryable_exception(error)
        return outcome.final_result(retry_wanted=spent, failed=True, error=error)
    policy = response.extensions.get("retry", policy)
    status = response.status_code
    return outcome.final_result(
        retry_wanted=policy.is_retryable_status_code(status), failed=outcome.status_error_type(status) is not None
    )


def _observe_sleep(wrapped: Callable[..., Any], policy: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    wait: list[float | None] = [None]
    token = _WAIT.set(wait)
    try:
        value = wrapped(*args, **kwargs)
    finally:
        _WAIT.reset(token)
    _report_wait(policy, wait)
    return value


async def _observe_async_sleep(
    wrapped: Callable[..., Any], policy: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    wait: list[float | None] = [None]
    token = _WAIT.set(wait)
    try:
        value = await wrapped(*args, **kwargs)
    finally:
        _WAIT.reset(token)
    _report_wait(policy, wait)
    return value


def _observe_wait(wrapped: Callable[..., Any], policy: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    seconds = wrapped(*args, **kwargs)
    wait = _WAIT.get()
    if wait is not None:
        wait[0] = seconds
    return seconds


@never_raises
def _report_wait(policy: Any, wait: list[float | None]) -> None:
    """The sleep ended: the loop tries again after the wait it was given (None if a subclass slept its own way).
    Inside an outer loop that this one joined, it is a wait within that loop's try, not a retry of it."""
    run = _RUN.get()
    if run is None:
        return
    run.policy = policy  # the Retry now in force (``increment()`` made it)
    loop = current_client_loop()
    if loop is None:
        return
    delay = None if wait[0] is None else float(wait[0])
    if loop is run.loop:
        loop.retrying(delay)
    else:
        loop.waited(delay)
