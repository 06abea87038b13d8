"""Attempts observed through a stand-in for the app's function, for libraries whose retry loop calls it directly.

backoff's closure and retrying's ``Retrying.call`` take the function, call it, and only afterwards decide whether to
retry it (and with which wait) or give up. The adapter hands the loop a stand-in that runs each attempt through
`ProxiedAttempts`: the attempt span is current while the function runs (so the app's own spans, and retries nested in
it, hang under it), and the attempt is reported as ended once the library's verdict is known (`reject`, `close` with
the chosen wait), with the time the function really returned.

`run_as_current` / `run_as_current_async` bracket a library's whole loop for every adapter whose hooks find the call
in a context variable, stand-in or not (tenacity's call forms and aiohttp-retry use them too).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from time import time_ns
from typing import Any, Protocol, TypeVar

from otel_resilience import semconv
from otel_resilience.core import RetryOperation, never_raises


class ProxiedAttempts:
    """The attempts of one retried call, and how the call ended."""

    __slots__ = ("op", "error", "end_ns", "open", "rejected", "last_error", "verdict", "pending_delay", "attributes")

    def __init__(self, op: RetryOperation) -> None:
        self.op = op
        self.error: BaseException | None = None
        self.end_ns = 0
        self.open = False  # an attempt returned and awaits the library's verdict
        self.rejected = False
        self.last_error: BaseException | None = None
        self.verdict: str | None = None
        """`retry.result` as the library decided it on its way out (gave up: exhausted / not_retried), if it did."""
        self.pending_delay: float | None = None
        """The wait the library chose after the attempt that returned, when it is known before the library has
        decided that another attempt follows (google-api-core draws it, then may still stop at its deadline): the
        attempt is closed with it only when the next attempt starts."""
        self.attributes: dict[str, Any] | None = None
        """More end attributes of the operation span, set by the adapter (``retry.stop_reason``)."""

    # --- the stand-in runs each attempt through these ----------------------------------------------------------------

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        token = self._begin()
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:
            self._returned(token, exc)
            raise
        self._returned(token, None)
        return value

    async def run_async(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        token = self._begin()
        try:
            value = await fn(*args, **kwargs)
        except BaseException as exc:
            self._returned(token, exc)
            raise
        self._returned(token, None)
        return value

    @never_raises
    def _begin(self) -> object:
        """The attempt starts and is made current; returns the token to detach it (None if that failed)."""
        self.close(self.pending_delay)  # a verdict we never saw: the attempt ends as it stood (with the wait drawn)
        self.pending_delay = None
        self.verdict = None
        self.rejected = False
        self.op.attempt_started()
        return self.op.activate()

    @never_raises
    def ran(self, start_ns: int, error: BaseException) -> None:
        """An attempt that began at `start_ns` and failed with `error` just now, before the call was known to be
        retried (redis: a command gets no span of ours unless its first attempt fails)."""
        self.op.attempt_started(start_ns=start_ns)
        self._returned(None, error)

    @never_raises
    def _returned(self, token: object, error: BaseException | None) -> None:
        if token is not None:
            self.op.deactivate(token)
        self.end_ns = time_ns()
        self.error = error
        self.open = True
        if error is not None:
            self.last_error = error

    # --- the library's verdict -----------------------------------------------------------------------------------

    def reject(self) -> None:
        """The library rejected the value the attempt returned (``on_predicate``, ``retry_on_result``)."""
        self.rejected = True

    @never_raises
    def close(self, next_delay: float | None = None) -> None:
        """Report the attempt that returned as ended; `next_delay` is the wait the library chose before the next."""
        if not self.open:
            return
        self.open = False
        rejected = self.rejected and self.error is None
        self.op.attempt_ended(
            self.error,
            error_type=semconv.REJECTED_RESULT if rejected else None,
            next_delay=next_delay,
            end_ns=self.end_ns,
        )

    @never_raises
    def finish(self, error: BaseException | None) -> None:
        """The call is over; `error` is what escaped to the caller. Without a verdict from the library: success when
        nothing escaped; ``not_retried`` when the last attempt's own exception escaped (one the policy does not
        retry); ``aborted`` when something else escaped (raised by the library's machinery or a hook of the app
        between attempts: the loop was abandoned)."""
        self.close()
        if self.verdict is not None:
            result = self.verdict
        elif error is None:
            result = semconv.RESULT_SUCCESS
        elif error is self.last_error:
            result = semconv.RESULT_NOT_RETRIED
        else:
            result = semconv.RESULT_ABORTED
        self.op.ended(result, error, attributes=self.attributes)


class Finishing(Protocol):
    def finish(self, error: BaseException | None) -> None: ...


F = TypeVar("F", bound=Finishing)


def run_as_current(var: ContextVar[F | None], call: F, loop: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run the library's retry loop with `call` in `var` (where the hooks inside the loop find it: per thread and per
    task), then `call.finish()` with whatever escaped. Every adapter that brackets a library's loop this way (backoff,
    retrying, tenacity's call forms, aiohttp-retry) uses this one bracket, so that they all end the call alike."""
    token = var.set(call)
    try:
        value = loop(*args, **kwargs)
    except BaseException as exc:
        call.finish(exc)
        raise
    finally:
        var.reset(token)
    call.finish(None)
    return value


async def run_as_current_async(
    var: ContextVar[F | None], call: F, loop: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """`run_as_current` for a coroutine function's loop."""
    token = var.set(call)
    try:
        value = await loop(*args, **kwargs)
    except BaseException as exc:
        call.finish(exc)
        raise
    finally:
        var.reset(token)
    call.finish(None)
    return value
