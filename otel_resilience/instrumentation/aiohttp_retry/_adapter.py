"""Translate aiohttp-retry's loop into HTTP attempts for core/http.py.

``_RequestContext._do_request`` is the whole loop: for that call only, the context's request function and retry
options are replaced by observers (each attempt, with its trace context injected into a copy of its headers; the
wait ``get_timeout`` returned, read, never computed) and put back after. Beside contrib's aiohttp-client spans (one
per attempt), those spans are enriched instead, from ``Trace.send_request_start``/``_end``/``_exception``
(docs/http.md).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, Final

import wrapt
from aiohttp.tracing import Trace
from aiohttp_retry.client import _RequestContext
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.instrumentation.utils import is_http_instrumentation_enabled
from opentelemetry.trace import get_current_span
from yarl import URL

from otel_resilience import semconv
from otel_resilience.core import Telemetry, http, never_raises, outcome
from otel_resilience.core.retry import run_as_current_async
from otel_resilience.patching import Patches

_CONTRIB_MARK: Final = "_is_instrumented_by_opentelemetry"
"""The attribute contrib's aiohttp-client instrumentation sets on the trace config it adds to every session."""


def _contrib_traces(session: Any) -> bool:
    """Whether contrib's aiohttp-client instrumentation will make a CLIENT span for a request of `session`."""
    configs = getattr(session, "_trace_configs", None) or ()
    return any(getattr(config, _CONTRIB_MARK, False) for config in configs) and is_http_instrumentation_enabled()


def _would_retry_status(options: Any, method: str, status: int) -> bool:
    """aiohttp-retry's own status rule (its ``_is_skip_retry`` without the attempt limit and without the app's
    ``evaluate_response_callback``, which we never call): whether this response was a failure the policy retries."""
    if method.upper() not in getattr(options, "methods", ()):
        return False
    if status >= 500 and getattr(options, "retry_all_server_errors", False):
        return True
    return status in getattr(options, "statuses", ())


class _RetryClientLoop:
    """One ``_do_request`` loop: its request, the context's collaborators we replaced, and the last attempt."""

    __slots__ = ("request", "context", "request_func", "options", "method", "status")

    def __init__(self, request: http.HttpRequest, context: Any) -> None:
        self.request = request
        self.context = context
        self.request_func = context._request_func
        self.options = context._retry_options
        self.method = ""
        self.status: int | None = None

    def install(self) -> None:
        self.context._request_func = self.attempt
        self.context._retry_options = _ObservedOptions(self.options, self)

    def restore(self) -> None:
        self.context._request_func = self.request_func
        self.context._retry_options = self.options

    async def attempt(self, method: str, url: Any, **kwargs: Any) -> Any:
        """Stands in for the session's ``request`` during the loop: one attempt."""
        started = self._attempt_started(method, url, kwargs)
        token = None
        if started is not None:
            kwargs, token = started
        try:
            response = await self.request_func(method, url, **kwargs)
        except BaseException as exc:
            self._attempt_ended(None, exc, token)
            raise
        self._attempt_ended(response, None, token)
        return response

    @never_raises
    def _attempt_started(self, method: str, url: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], object] | None:
        self.method = method
        target = URL(url)
        if kwargs.get("params"):
            target = target.update_query(kwargs["params"])
        session = getattr(self.request_func, "__self__", None)
        ctx = self.request.attempt_started(
            method, str(target), target.host or "", target.port, beside_contrib=_contrib_traces(session)
        )
        if ctx is None:
            return None
        headers = kwargs.get("headers")
        carrier = {} if not headers else headers.copy() if hasattr(headers, "copy") else dict(headers)
        propagate.inject(carrier, context=ctx)
        return {**kwargs, "headers": carrier}, otel_context.attach(ctx)

    @never_raises
    def _attempt_ended(self, response: Any, error: BaseException | None, token: object | None) -> None:
        if token is not None:
            otel_context.detach(token)  # type: ignore[arg-type]
        if response is not None:
            self.status = int(response.status)
            self.request.attempt_ended(status=self.status)
        else:
            self.status = None
            self.request.attempt_ended(error=error)

    @never_raises
    def waits(self, delay: Any) -> None:
        self.request.retrying(float(delay))

    def verdict(self, status: int | None, error: BaseException | None) -> str | None:
        """The loop's result if the attempt that just got `status` (or raised `error`) ends it, decided as
        aiohttp-retry decides (``_do_request`` and ``_is_skip_retry``, read from the options, nothing called); None
        while another attempt may follow, or when only the app's ``evaluate_response_callback`` could tell."""
        options = self.options
        at_limit = self.request.attempts >= getattr(options, "attempts", 1)
        if error is not None:
            retried = any(isinstance(error, kind) for kind in getattr(options, "exceptions", ()))
            if retried and not at_limit and not outcome.is_abort(error):
                return None
            return outcome.final_result(retry_wanted=retried, failed=True, error=error)
        if status is None:
            return None
        retried = _would_retry_status(options, self.method, status)
        if not at_limit and (retried or getattr(options, "evaluate_response_callback", None) is not None):
            return None
        return outcome.final_result(retry_wanted=retried, failed=outcome.status_error_type(status) is not None)

    @never_raises
    def contrib_span_ending(self, status: int | None, error: BaseException | None) -> None:
        """Contrib's span of this attempt is about to end: if the attempt ends the loop, it carries the outcome."""
        result = self.verdict(status, error)
        if result is not None:
            self.request.layer_ended(result)

    @never_raises
    def ended(self, error: BaseException | None) -> None:
        """The loop returned the last response (`error` None) or raised (the last attempt's error, the error
        ``raise_for_status`` raised on the last response, or a cancellation): the context gets the app's request
        function and options back, and the request ends."""
        self.restore()
        if outcome.is_abort(error):
            result: str | None = semconv.RESULT_ABORTED
        elif self.status is not None:
            result = self.verdict(self.status, None)
        else:
            result = self.verdict(None, error)
        self.request.ended(result, error)


class _ObservedOptions(wrapt.ObjectProxy):  # type: ignore[misc]
    """The app's retry options, unchanged, except that the wait ``get_timeout`` returns is reported as it leaves."""

    def __init__(self, options: Any, run: _RetryClientLoop) -> None:
        super().__init__(options)
        self._self_run = run

    def get_timeout(self, *args: Any, **kwargs: Any) -> Any:
        delay = self.__wrapped__.get_timeout(*args, **kwargs)
        self._self_run.waits(delay)
        return delay


_RUN: contextvars.ContextVar[_RetryClientLoop | None] = contextvars.ContextVar("otel_resilience_aiohttp_retry_run", default=None)


class AiohttpRetryAdapter:
    """Holds the Telemetry for aiohttp-retry and installs the hooks."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch(self, patches: Patches) -> None:
        """The loop; deferred until something records: where contrib's span of an attempt opens and is about to end
        (only inside a loop of ours)."""
        patches.wrap(_RequestContext, "_do_request", self._do_request, enabled=self.telemetry.recording)
        patches.wrap(Trace, "send_request_start", self._request_start, enabled=_RUN.get, deferred=True)
        patches.wrap(Trace, "send_request_end", self._request_end, enabled=_RUN.get, deferred=True)
        patches.wrap(Trace, "send_request_exception", self._request_exception, enabled=_RUN.get, deferred=True)

    async def _do_request(self, wrapped: Callable[..., Any], context: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        run = self._start(context)
        if run is None:
            return await wrapped(*args, **kwargs)
        return await run_as_current_async(_RUN, run, wrapped, args, kwargs)

    @never_raises
    def _start(self, context: Any) -> _RetryClientLoop | None:
        if isinstance(context._retry_options, _ObservedOptions):  # this very loop is already observed
            return None
        first = context._params_list[0]
        request = http.HttpRequest.start(self.telemetry, first.method, URL(first.url).host or "")
        if request is None:
            return None
        run = _RetryClientLoop(request, context)
        run.install()
        return run

    async def _request_start(self, wrapped: Callable[..., Any], trace: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``Trace.send_request_start``: after contrib's ``on_request_start`` ran, its span for this attempt is current."""
        value = await wrapped(*args, **kwargs)
        self._contrib_started(trace)
        return value

    async def _request_end(self, wrapped: Callable[..., Any], trace: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``Trace.send_request_end(method, url, headers, response)``: contrib ends its span in there."""
        self._contrib_ending(trace, args[3] if len(args) > 3 else kwargs.get("response"), None)
        return await wrapped(*args, **kwargs)

    async def _request_exception(
        self, wrapped: Callable[..., Any], trace: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``Trace.send_request_exception(method, url, headers, exception)``: contrib ends its span in there."""
        self._contrib_ending(trace, None, args[3] if len(args) > 3 else kwargs.get("exception"))
        return await wrapped(*args, **kwargs)

    @staticmethod
    def _contrib_run(trace: Any) -> _RetryClientLoop | None:
        run = _RUN.get()
        if run is not None and getattr(getattr(trace, "_trace_config", None), _CONTRIB_MARK, False):
            return run
        return None

    @never_raises
    def _contrib_started(self, trace: Any) -> None:
        run = self._contrib_run(trace)
        if run is not None:
            run.request.contrib_span(get_current_span())

    @never_raises
    def _contrib_ending(self, trace: Any, response: Any, error: BaseException | None) -> None:
        run = self._contrib_run(trace)
        if run is not None:
            run.contrib_span_ending(None if response is None else int(response.status), error)
