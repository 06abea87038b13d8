"""Translate the retry loop of SDKs generated from the Stainless template (openai, anthropic, and the other clients made
from it) into a loop above the HTTP client (`core.http_loop.ClientLoop`): one adapter, given the SDK's module name,
because every such SDK runs the same loop in ``{sdk}._base_client``. It hooks the loop method (``_request`` where the
SDK has one, else ``request``) and ``_calculate_retry_timeout`` (the SDK's own wait, never recomputed); the attempts
are the requests our httpx / httpx2 adapters see inside the loop, since the SDKs build and send each try in methods of
their own. Hooks, results and the shapes beside contrib: docs/http.md, "Retry loops above the HTTP client"."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from otel_resilience.core import Telemetry, never_raises, outcome, report_internal_error
from otel_resilience.core.bracket import bracketing
from otel_resilience.core.http_loop import ClientLoop, current_client_loop, end_client_loop
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.patching import Patches


def _loop_method(cls: type) -> str:
    """The method that runs the retry loop: ``_request`` where the class has one (anthropic's ``request`` opens the
    SDK's own span around it), else ``request``."""
    return "_request" if "_request" in vars(cls) else "request"


class StainlessRetryInstrumentor(ResilienceInstrumentor):
    """The instrumentor of one Stainless SDK, whose `library` is the SDK's module name: each SDK's package only names
    itself (a base, never instantiated: `BaseInstrumentor` keeps one instance per class)."""

    def _patch(self, telemetry: Telemetry) -> None:
        StainlessAdapter(telemetry, self.library).patch(self.patches)


class StainlessAdapter:
    """Holds the Telemetry for one SDK (`module`, e.g. ``"openai"``) and installs the hooks."""

    def __init__(self, telemetry: Telemetry, module: str) -> None:
        self.telemetry = telemetry
        self.base_client = importlib.import_module(f"{module}._base_client")

    def patch(self, patches: Patches) -> None:
        """The loop; deferred until something records: the wait hook (it acts only inside a loop of ours)."""
        may_record = self.telemetry.may_record
        sync_client, async_client = self.base_client.SyncAPIClient, self.base_client.AsyncAPIClient
        loop, async_loop = bracketing(self._start, _end)
        patches.wrap(sync_client, _loop_method(sync_client), loop, enabled=may_record)
        patches.wrap(async_client, _loop_method(async_client), async_loop, enabled=may_record)
        patches.wrap(
            self.base_client.BaseClient, "_calculate_retry_timeout", _observe_wait, enabled=current_client_loop,
            deferred=True,
        )

    @never_raises
    def _start(self, client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ClientLoop | None:
        options = kwargs["options"] if "options" in kwargs else args[1]
        max_retries = options.get_max_retries(client.max_retries)
        if not isinstance(max_retries, int) or max_retries <= 0:
            return None  # the policy makes no retries: each request is a plain one
        return ClientLoop.start(self.telemetry, max_retries + 1)


def _end(loop: ClientLoop, value: Any, error: BaseException | None) -> None:
    """The loop is over: its result, then `end_client_loop` (guarded itself), which puts the scope back whatever
    happened before, so that an error of ours never leaves the loop current after the call."""
    try:
        if error is None:
            result = outcome.loop_result(failed=False, spent=False)  # the SDK returns only what it accepted
        else:
            result = _result_of_raise(loop, error)
    except Exception:
        report_internal_error("instrumentation._stainless: the loop's result")
        result = None
    end_client_loop(loop, result, error)


def _result_of_raise(loop: ClientLoop, error: BaseException) -> str | None:
    """The SDK raised: after its last try (every retry used) its attempts are spent; before, its policy did not
    retry. (None when this cannot be told: the core then infers the result from the last attempt.)"""
    if loop.max_attempts is None:
        return None
    return outcome.loop_result(failed=True, spent=loop.retries + 1 >= loop.max_attempts, error=error)


def _observe_wait(wrapped: Callable[..., Any], client: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    delay = wrapped(*args, **kwargs)
    _report_wait(delay)
    return delay


@never_raises
def _report_wait(delay: Any) -> None:
    """The SDK decided to try again after `delay` seconds: the wait after the attempt that just ended."""
    loop = current_client_loop()
    if loop is not None:
        loop.retrying(float(delay))
