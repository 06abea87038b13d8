"""Translate botocore's retry loop (and aiobotocore's, the same loop awaited) into a loop above the HTTP client for
`core.http_loop`. botocore retries above urllib3, in ``Endpoint._send_request``, sending each attempt with
``Retry(False)``, so only this loop knows the attempts: its hooks (read-only) take the call from ``_send_request``,
each attempt from ``_get_response``, botocore's own delay from the ``needs-retry`` answer ``_needs_retry`` sleeps, and
the standard and adaptive modes' reasons for stopping (the retry quota among them) from ``RetryContext``. The facts
read, the shapes alone and beside contrib's botocore span, and the hook table: docs/http.md, "botocore and
aiobotocore"."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

from botocore.awsrequest import HeadersDict
from botocore.retries.standard import RetryContext
from opentelemetry import context, propagate

from otel_resilience import semconv
from otel_resilience.core import Telemetry, http, never_raises, outcome, report_internal_error
from otel_resilience.core.bracket import await_then_end, call_then_end
from otel_resilience.core.http_loop import LoopCall, attempt_context
from otel_resilience.patching import Patches

_STARTING: Final = f"{__name__}: starting an attempt"


class _Call:
    """One call of botocore's loop in this thread or task, and what botocore said about it so far."""

    __slots__ = ("call", "request_dict", "deciding", "failed", "exception", "quota_reached", "max_reached")

    def __init__(self, call: LoopCall, request_dict: dict[str, Any]) -> None:
        self.call = call
        self.request_dict = request_dict
        self.deciding = False  # inside _needs_retry: the next first_non_none_response is the retry handler's answer
        self.failed = False  # the last attempt raised, or got a status botocore raises for (>= 300)
        self.exception: BaseException | None = None  # the last attempt's, which botocore re-raises at the end
        self.quota_reached = False
        self.max_reached = False


_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("otel_resilience_botocore_call", default=None)


def _deciding() -> bool:
    state = _CALL.get()
    return state is not None and state.deciding


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    return args[index] if len(args) > index else kwargs[name]


def _headers_copy(headers: Any) -> Any:
    """A copy of an attempt's headers to inject into. botocore's ``HeadersDict`` copies itself key by key in Python
    (a key object made per header); its state is one dict (``_dict``, of those key objects), copied in C here."""
    if type(headers) is HeadersDict:
        copy = HeadersDict.__new__(HeadersDict)
        copy._dict = headers._dict.copy()
        return copy
    return headers.copy()


_Attempt = tuple[_Call, Any, Any, object]
"""A running attempt: its call, botocore's request, the request's own headers, and the context token (or None)."""


class BotocoreAdapter:
    """Holds the Telemetry and the observations shared by the sync and async hooks."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch(self, patches: Patches) -> None:
        """The call; deferred until something records: the attempt and decision hooks (they act only inside a call)."""
        from botocore import endpoint

        patches.wrap(endpoint.Endpoint, "_send_request", self._send_request, enabled=self.telemetry.may_record)
        patches.wrap(endpoint.Endpoint, "_get_response", self._get_response, enabled=_CALL.get, deferred=True)
        patches.wrap(endpoint.Endpoint, "_needs_retry", self._needs_retry, enabled=_CALL.get, deferred=True)
        self.patch_decisions(patches, endpoint)

    def patch_decisions(self, patches: Patches, module: Any) -> None:
        """The retry handler's answer, as `module`'s ``_needs_retry`` reads it, and the standard mode's reasons."""
        patches.wrap(module, "first_non_none_response", self._decision, enabled=_deciding, deferred=True)
        patches.wrap(RetryContext, "add_retry_metadata", self._retry_metadata, enabled=_CALL.get, deferred=True)

    # --- the call --------------------------------------------------------------------------------------------

    @never_raises
    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[_Call, contextvars.Token[Any]] | None:
        request_dict = _arg(args, kwargs, 0, "request_dict")
        operation_model = _arg(args, kwargs, 1, "operation_model")
        service = str(operation_model.service_model.service_id)
        operation = str(operation_model.name)
        attributes: dict[str, Any] = {
            semconv.RPC_SYSTEM: semconv.RPC_SYSTEM_AWS,
            semconv.RPC_SERVICE: service,
            semconv.RPC_METHOD: operation,
        }
        region = (request_dict.get("context") or {}).get("client_region")
        if isinstance(region, str):
            attributes[semconv.CLOUD_REGION] = region
        call = LoopCall.start(self.telemetry, f"{service}.{operation}", attributes)
        if call is None:
            return None
        state = _Call(call, request_dict)
        return state, _CALL.set(state)

    @never_raises
    def end(self, started: tuple[_Call, contextvars.Token[Any]], value: Any, error: BaseException | None) -> None:
        """botocore's loop is over: it returned the last response (`value`), or raised `error` (the last attempt's
        exception, or one from outside the attempts: a handler, an interrupted sleep)."""
        state, token = started
        _CALL.reset(token)
        call = state.call
        retries = (state.request_dict.get("context") or {}).get("retries") or {}
        maximum = retries.get("max")
        if type(maximum) is int:
            call.max_attempts = maximum
        if error is not None and error is not state.exception:
            call.ended(error=error)  # not the attempts' outcome: inferred (aborted for an interrupt)
            return
        call.budget_exhausted = state.failed and state.quota_reached
        spent = state.quota_reached or state.max_reached or (
            call.max_attempts is not None and call.attempts >= call.max_attempts
        )
        call.ended(outcome.loop_result(failed=state.failed, spent=spent, error=error), error)

    def _send_request(self, wrapped: Callable[..., Any], endpoint: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return call_then_end(self.end, self.start(args, kwargs), wrapped, args, kwargs)

    # --- attempts --------------------------------------------------------------------------------------------

    def attempt_starts(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Attempt | None:
        """Guarded inline by the callers (a `never_raises` frame on each attempt buys nothing here)."""
        try:
            state = _CALL.get()
            if state is None:
                return None
            request = _arg(args, kwargs, 0, "request")
            url = str(request.url)
            parts = urlsplit(url)
            scheme = parts.scheme or "https"
            host = parts.hostname or ""
            port = parts.port or http.default_port(scheme)
            ctx = state.call.attempt_started(str(request.method), url, host, port)
            if ctx is None:  # beside contrib's span for the call, which injected its own context
                return state, request, None, None
            headers = request.headers
            carrier = _headers_copy(headers)
            propagate.inject(carrier, context=ctx)
            request.headers = carrier  # botocore's own per-attempt request; its headers are put back after
            return state, request, headers, context.attach(attempt_context(ctx))
        except Exception:
            report_internal_error(_STARTING)
            return None

    @never_raises
    def attempt_ends(self, attempt: _Attempt, value: Any, error: BaseException | None) -> None:
        state, request, headers, token = attempt
        if token is not None:
            context.detach(token)  # type: ignore[arg-type]
            request.headers = headers
        if error is None:  # botocore's (success_response, exception)
            success_response, error = value
            if success_response is not None:
                status = int(success_response[0].status_code)
                state.exception = None
                state.failed = status >= 300  # botocore raises ClientError for these
                state.call.attempt_ended(status=status)
                return
        state.exception = error
        state.failed = True
        state.call.attempt_ended(error=error)

    def _get_response(self, wrapped: Callable[..., Any], endpoint: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return call_then_end(self.attempt_ends, self.attempt_starts(args, kwargs), wrapped, args, kwargs)

    # --- botocore's decisions --------------------------------------------------------------------------------

    def _needs_retry(self, wrapped: Callable[..., Any], endpoint: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        state = _CALL.get()
        state.deciding = True  # type: ignore[union-attr]  # the enabled check is _CALL.get
        try:
            return wrapped(*args, **kwargs)
        finally:
            state.deciding = False  # type: ignore[union-attr]

    def _decision(self, wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        answer = wrapped(*args, **kwargs)
        self._decided(answer)
        return answer

    @never_raises
    def _decided(self, answer: Any) -> None:
        """The retry handler's answer: None or False, no retry; else the seconds botocore sleeps before it."""
        state = _CALL.get()
        if state is not None and state.deciding:
            state.deciding = False  # only the first call inside _needs_retry is the answer
            if answer is not None and answer is not False:
                state.call.retrying(float(answer))

    def _retry_metadata(self, wrapped: Callable[..., Any], retry_context: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        value = wrapped(*args, **kwargs)
        self._noted(kwargs)
        return value

    @never_raises
    def _noted(self, metadata: dict[str, Any]) -> None:
        state = _CALL.get()
        if state is not None:
            if metadata.get("RetryQuotaReached"):
                state.quota_reached = True
            if metadata.get("MaxAttemptsReached"):
                state.max_reached = True


class AsyncHooks:
    """aiobotocore's ``AioEndpoint``: the same observations around its coroutines."""

    def __init__(self, adapter: BotocoreAdapter) -> None:
        self.adapter = adapter

    def patch(self, patches: Patches) -> None:
        from aiobotocore import endpoint

        adapter = self.adapter
        patches.wrap(endpoint.AioEndpoint, "_send_request", self._send_request, enabled=adapter.telemetry.may_record)
        patches.wrap(endpoint.AioEndpoint, "_get_response", self._get_response, enabled=_CALL.get)
        patches.wrap(endpoint.AioEndpoint, "_needs_retry", self._needs_retry, enabled=_CALL.get)
        adapter.patch_decisions(patches, endpoint)

    async def _send_request(self, wrapped: Callable[..., Any], endpoint: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return await await_then_end(self.adapter.end, self.adapter.start(args, kwargs), wrapped, args, kwargs)

    async def _get_response(self, wrapped: Callable[..., Any], endpoint: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        adapter = self.adapter
        return await await_then_end(adapter.attempt_ends, adapter.attempt_starts(args, kwargs), wrapped, args, kwargs)

    async def _needs_retry(self, wrapped: Callable[..., Any], endpoint: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        state = _CALL.get()
        state.deciding = True  # type: ignore[union-attr]
        try:
            return await wrapped(*args, **kwargs)
        finally:
            state.deciding = False  # type: ignore[union-attr]
