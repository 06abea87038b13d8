"""The retry observer: an adapter reports a library's retry events to a `RetryOperation`, which alone decides what they
look like in a trace (docs/telemetry.md); and the helpers that run a library's loop with its operation current, the
same way for every retry adapter."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from time import time_ns
from typing import Any, Final, Protocol, TypeVar

from opentelemetry import context
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.util.types import AttributeValue

from otel_resilience import semconv
from otel_resilience.core import errors, outcome
from otel_resilience.core._safety import never_raises, report_internal_error
from otel_resilience.core.config import Settings
from otel_resilience.core.telemetry import Telemetry

_DEPTH_KEY: Final = context.create_key("otel_resilience.retry_depth")
_ERROR: Final = Status(StatusCode.ERROR)
_NS: Final = 1e9


@dataclass(slots=True, eq=False)
class EndedAttempt:
    """An attempt that ended, not yet reported: its span stays open until we know what followed it (the wait before
    the next attempt, or the outcome), then gets its attributes in one call and ends at `end_ns`."""

    span: Span | None
    end_ns: int
    error: BaseException | None
    error_type: str | None
    status: int | None = None
    delay: float | None = None  # the wait the library chose before the next attempt

    def failed(self, settings: Settings) -> None:
        """A failed attempt's span gets status ERROR and, for a raised error, its ``exception`` event (with a
        stacktrace only when the policy is ``all``), described as it is now; the error is not kept."""
        span = self.span
        if span is None or self.error_type is None:
            return
        span.set_status(_ERROR)
        if self.error is not None:
            exception = errors.exception_attributes(self.error, stacktrace=settings.stacktraces == "all")
            span.add_event(semconv.EXCEPTION_EVENT, exception, self.end_ns)
            self.error = None

    def report(self, attributes: dict[str, Any]) -> None:
        """End the span (if any) with `attributes` and how the attempt ended, `retry.delay` and `error.type`, in one
        `set_attributes` call (the SDK takes its span lock per call), at the time the attempt ended."""
        span = self.span
        if span is None:
            return
        if self.delay is not None:
            attributes[semconv.RETRY_DELAY] = self.delay
        if self.error_type is not None:
            attributes[semconv.ERROR_TYPE] = self.error_type
        if attributes:
            span.set_attributes(attributes)
        span.end(self.end_ns)


def current_depth(ctx: Context | None = None) -> int:
    """How many retry attempts enclose the current code (0 outside any retry)."""
    return context.get_value(_DEPTH_KEY, ctx) or 0  # type: ignore[return-value]


class RetryOperation:
    """One retried call, from its first attempt to its result. Its methods guard themselves (core/_safety.py)::

        op = RetryOperation.start(telemetry, "app.fetch_user", span_name="fetch_user", max_attempts=3)
        op.attempt_started(); token = op.activate(); ...; op.deactivate(token)
        op.attempt_ended(exc, next_delay=0.1)
        ...
        op.ended(semconv.RESULT_EXHAUSTED, exc)
    """

    __slots__ = (
        "_telemetry",
        "name",
        "span_name",
        "depth",
        "attempts",
        "total_delay",
        "_span",
        "_recording",
        "_attempt_spans",
        "_ctx",
        "_start_ns",
        "_attempt_span",
        "_attempt_start_ns",
        "_ended_attempt",
        "_measured_delays",
        "_last_error_type",
        "_in_attempt",
        "_ended",
    )

    @classmethod
    def start(
        cls,
        telemetry: Telemetry,
        name: str,
        *,
        span_name: str | None = None,
        max_attempts: int | None = None,
        measured_delays: bool = False,
        parent: Context | None = None,
        start_ns: int | None = None,
    ) -> RetryOperation | None:
        """Start observing one retried operation, or return None when nothing records (the adapter then stays out of
        the way). `name` is ``retry.name`` (``module.qualname``), `span_name` the bare qualname. Under a parent whose
        children can never be recorded (core/sampling.py), the operation and its attempts get no span: the attempts
        run in the parent's context (its trace id and sampled flag propagate), and only the metric points are made.
        `measured_delays`: the gap between attempts is `retry.delay` where the library's chosen wait cannot be read.
        `parent`: the
        context the operation belongs to when it starts later than its call (a stream's operation starts at its first
        item); default: the current one. `start_ns`: when the operation really began, for an adapter that learns it
        is retried only after its first attempt failed (redis)."""
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            if parent is None:
                parent = context.get_current()  # read once: for the suppression check and as the parent
                if not telemetry.recording(parent):
                    return None
            elif not telemetry.recording():
                return None
            return cls(telemetry, name, span_name or name, max_attempts, measured_delays, parent, start_ns)
        except Exception:
            report_internal_error("otel_resilience.core.retry.RetryOperation.start")
            return None

    def __init__(
        self,
        telemetry: Telemetry,
        name: str,
        span_name: str,
        max_attempts: int | None,
        measured_delays: bool,
        parent: Context,
        start_ns: int | None,
    ) -> None:
        self._telemetry = telemetry
        self.name = name
        self.span_name = span_name
        self.attempts = 0
        self.total_delay = 0.0
        self._attempt_span: Span | None = None
        self._attempt_start_ns = 0
        self._ended_attempt: EndedAttempt | None = None
        self._measured_delays = measured_delays
        self._last_error_type: str | None = None
        self._in_attempt = False
        self._ended = False
        self.depth = (parent.get(_DEPTH_KEY) or 0) + 1  # `current_depth(parent)`, one call fewer on every call
        self._start_ns = time_ns() if start_ns is None else start_ns
        if telemetry.never_recorded_under(parent):
            self._span: Span | None = None
            self._recording = self._attempt_spans = False
            self._ctx = context.set_value(_DEPTH_KEY, self.depth, parent)
            return
        attributes: dict[str, AttributeValue] = {semconv.RETRY_NAME: name, semconv.RETRY_DEPTH: self.depth}
        if max_attempts is not None:
            attributes[semconv.RETRY_MAX_ATTEMPTS] = max_attempts
        span = self._span = telemetry.tracer.start_span(
            f"{semconv.RETRY_OPERATION_SPAN_PREFIX} {span_name}",
            context=parent,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=self._start_ns,
        )
        self._ctx = context.set_value(_DEPTH_KEY, self.depth, set_span_in_context(span, parent))
        self._recording = span.is_recording()
        """Whether the operation span keeps what it is given: if not, its end attributes are never built."""
        self._attempt_spans = self._recording or not telemetry.never_recorded_under(self._ctx)
        """Whether an attempt span could be recorded; if not, attempts get none."""

    # --- attempts ----------------------------------------------------------------------------------------------

    def attempt_started(self, *, start_ns: int | None = None) -> None:
        """An attempt begins now. `start_ns` is for an adapter that learns of an attempt only after it began (backoff
        decorations made before instrumentation report each attempt when it ended): the attempt's real start time."""
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            now = time_ns() if start_ns is None else start_ns
            if self._in_attempt:  # the previous attempt was never reported as ended: it ends as it stands
                self.attempt_ended()
            self._report_ended_attempt(now)
            self._in_attempt = True
            self.attempts += 1
            self._attempt_start_ns = now
            mode = self._telemetry.settings.attempt_spans
            if not self._attempt_spans or mode == "none" or mode == "on_retry" and self.attempts == 1:
                self._attempt_span = None  # on_retry: created only if this first attempt fails, with its real times
                return
            self._attempt_span = self._new_attempt_span(now)
        except Exception:
            report_internal_error("otel_resilience.core.retry.RetryOperation.attempt_started")

    def _new_attempt_span(self, start_ns: int) -> Span:
        return self._telemetry.tracer.start_span(
            self.span_name,
            context=self._ctx,
            kind=SpanKind.INTERNAL,
            attributes={semconv.RETRY_NAME: self.name, semconv.RETRY_ATTEMPT: self.attempts},
            start_time=start_ns,
        )

    @property
    def attempt_context(self) -> Context:
        """The context an attempt runs in: its span (or the operation's) current, and the retry depth one deeper."""
        if self._attempt_span is None:
            return self._ctx
        return set_span_in_context(self._attempt_span, self._ctx)

    def activate(self) -> object:
        """Make the running attempt current (so spans the app makes inside it are its children); returns a token
        for `deactivate` (None if that failed). Attach and detach must pair up in the same context, as with any
        OpenTelemetry context. Guarded inline, as `deactivate`: both run around every attempt."""
        try:
            return context.attach(self.attempt_context)
        except Exception:
            report_internal_error("otel_resilience.core.retry.RetryOperation.activate")
            return None

    @staticmethod
    def deactivate(token: object) -> None:
        if token is not None:
            try:
                context.detach(token)  # type: ignore[arg-type]
            except Exception:
                report_internal_error("otel_resilience.core.retry.RetryOperation.deactivate")

    def attempt_ended(
        self,
        error: BaseException | None = None,
        *,
        error_type: str | None = None,
        next_delay: float | None = None,
        end_ns: int | None = None,
    ) -> None:
        """The running attempt ended: it raised `error`, or its result was rejected (`error_type`, e.g.
        ``rejected_result``), or it succeeded (neither). `next_delay` is the wait the library chose before the next
        attempt (None when no attempt follows, or when the delay is measured). Ignored when no attempt is running, so
        an adapter may report an end it is unsure was already reported. `end_ns`: when the attempt really ended, for
        an adapter that learns the verdict later; default: now."""
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            if not self._in_attempt:
                return
            self._in_attempt = False
            if end_ns is None:
                end_ns = time_ns()
            if error_type is None and error is not None:
                error_type = errors.error_type(error)
            self._last_error_type = error_type
            if next_delay is not None:
                self.total_delay += next_delay
            span = self._attempt_span
            self._attempt_span = None
            if span is None:
                if not self._attempt_spans:
                    return  # nothing of the attempt would be recorded (`none`: the operation span is not recording)
                mode = self._telemetry.settings.attempt_spans
                if mode == "none":
                    if self._recording and self._span is not None:
                        self._span.add_event(
                            semconv.RETRY_ATTEMPT_EVENT,
                            self._attempt_event_attributes(error, error_type, next_delay),
                            timestamp=end_ns,
                        )
                    return
                if error_type is None:
                    return  # on_retry: a first attempt that succeeded gets no span
                span = self._new_attempt_span(self._attempt_start_ns)
            if not span.is_recording():  # the sampler dropped this attempt: it keeps nothing it is given
                if not self._recording:
                    return
                span = None  # its measured delay still counts in the operation's `retry.total_delay`
            ended = self._ended_attempt = EndedAttempt(span, end_ns, error, error_type, delay=next_delay)
            ended.failed(self._telemetry.settings)
        except Exception:
            report_internal_error("otel_resilience.core.retry.RetryOperation.attempt_ended")

    def _attempt_event_attributes(
        self, error: BaseException | None, error_type: str | None, next_delay: float | None
    ) -> dict[str, Any]:
        attributes: dict[str, Any] = {semconv.RETRY_ATTEMPT: self.attempts}
        if error_type is not None:
            attributes[semconv.ERROR_TYPE] = error_type
        if error is not None:
            attributes.update(errors.exception_attributes(error, stacktrace=False))
        if next_delay is not None:
            attributes[semconv.RETRY_DELAY] = next_delay
        return attributes

    def _report_ended_attempt(self, next_start_ns: int | None) -> None:
        """End the previous attempt's span; when delays are measured, its delay is the gap until `next_start_ns`."""
        ended = self._ended_attempt
        if ended is None:
            return
        self._ended_attempt = None
        if self._measured_delays and ended.delay is None and next_start_ns is not None:
            ended.delay = max(0, next_start_ns - ended.end_ns) / _NS
            self.total_delay += ended.delay
        ended.report({})

    # --- the end -------------------------------------------------------------------------------------------------

    def ended(
        self,
        result: str | None = None,
        error: BaseException | None = None,
        *,
        error_type: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """The operation is over: `result` is the library's verdict (one of ``semconv.RETRY_RESULTS``; None: see
        `outcome.operation_result`), `error` the exception that escaped to the caller, if any, and `attributes` more
        end attributes of the operation span (``retry.stop_reason``). Ignored once the operation has ended."""
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            if self._ended:
                return
            self._ended = True
            end_ns = time_ns()
            if self._in_attempt:  # ended mid-attempt (cancelled, abandoned): the attempt ends as it stands
                self.attempt_ended(error)
            result = outcome.operation_result(result, error, self._last_error_type is not None)
            self._report_ended_attempt(None)
            span = self._span
            if span is not None and self._recording:
                self._end_span(span, end_ns, result, error, error_type, attributes)
            self._telemetry.record_retry(
                self.name, result, self.depth, self.attempts, (end_ns - self._start_ns) / _NS, self._ctx
            )
        except Exception:
            report_internal_error("otel_resilience.core.retry.RetryOperation.ended")

    def _end_span(
        self,
        span: Span,
        end_ns: int,
        result: str,
        error: BaseException | None,
        error_type: str | None,
        attributes: dict[str, Any] | None,
    ) -> None:
        if result != semconv.RESULT_SUCCESS and error_type is None:
            error_type = errors.error_type(error) if error is not None else self._last_error_type
        span_attributes: dict[str, Any] = {
            semconv.RETRY_ATTEMPTS: self.attempts,
            semconv.RETRY_RESULT: result,
            semconv.RETRY_TOTAL_DELAY: self.total_delay,
        }
        if attributes:
            span_attributes.update(attributes)
        if result != semconv.RESULT_SUCCESS:
            if error_type is not None:
                span_attributes[semconv.ERROR_TYPE] = error_type
            span.set_status(_ERROR)
            if error is not None:
                stacktrace = self._telemetry.settings.stacktraces != "none"
                span.add_event(
                    semconv.EXCEPTION_EVENT, errors.exception_attributes(error, stacktrace=stacktrace), end_ns
                )
        span.set_attributes(span_attributes)
        span.end(end_ns)

    @property
    def is_ended(self) -> bool:
        return self._ended

    @property
    def in_attempt(self) -> bool:
        """Whether an attempt has started and not yet ended (a stream's attempt lasts while it is read)."""
        return self._in_attempt


# --- running a library's loop (every retry adapter alike) ------------------------------------------------------------


class ProxiedAttempts:
    """The attempts of one retried call whose library calls the app's function itself (backoff's closure, retrying's
    ``Retrying.call``) and only afterwards decides whether to retry it: the adapter hands the loop a stand-in that
    runs each attempt through `run` (the attempt span current while it runs), and reports the library's verdict
    (`reject`, `attempt_ended` with the chosen wait, `verdict`), so the attempt ends when the function returned."""

    __slots__ = ("op", "error", "end_ns", "returned", "rejected", "last_error", "verdict", "pending_delay", "attributes")

    def __init__(self, op: RetryOperation) -> None:
        self.op = op
        self.error: BaseException | None = None
        self.end_ns = 0
        self.returned = False  # an attempt returned and awaits the library's verdict
        self.rejected = False
        self.last_error: BaseException | None = None
        self.verdict: str | None = None
        """`retry.result` as the library decided it on its way out (gave up: exhausted / not_retried), if it did."""
        self.pending_delay: float | None = None
        """The wait the library chose after the attempt that returned, when it is known before the library has
        decided that another attempt follows (google-api-core draws it, then may still stop at its deadline): the
        attempt ends with it only when the next attempt starts."""
        self.attributes: dict[str, Any] | None = None
        """More end attributes of the operation span, set by the adapter (``retry.stop_reason``)."""

    # The sync and async forms are twins kept side by side: one awaits the attempt, the other calls it.
    def run(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        token = self.attempt_started()
        error: BaseException | None = None
        try:
            return fn(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.attempt_returned(token, error)

    async def run_async(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        token = self.attempt_started()
        error: BaseException | None = None
        try:
            return await fn(*args, **kwargs)
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.attempt_returned(token, error)

    @never_raises
    def attempt_started(self) -> object:
        """The attempt starts and is made current; returns the token to detach it (None if that failed)."""
        # a verdict we never saw (the library went straight on): the attempt ends as it stood, with any wait drawn
        self.attempt_ended(self.pending_delay)
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
        self.attempt_returned(None, error)

    @never_raises
    def attempt_returned(self, token: object, error: BaseException | None) -> None:
        self.op.deactivate(token)
        self.end_ns = time_ns()
        self.error = error
        self.returned = True
        if error is not None:
            self.last_error = error

    def reject(self) -> None:
        """The library rejected the value the attempt returned (``on_predicate``, ``retry_on_result``)."""
        self.rejected = True

    @never_raises
    def attempt_ended(self, next_delay: float | None = None) -> None:
        """The library's verdict on the attempt that returned: it ended; `next_delay` is the wait chosen before the
        next attempt, if one follows."""
        if not self.returned:
            return
        self.returned = False
        rejected = self.rejected and self.error is None
        self.op.attempt_ended(
            self.error,
            error_type=semconv.REJECTED_RESULT if rejected else None,
            next_delay=next_delay,
            end_ns=self.end_ns,
        )

    @never_raises
    def ended(self, error: BaseException | None) -> None:
        """The call is over; `error` is what escaped to the caller (`outcome.proxied_result` names the result)."""
        self.attempt_ended()
        self.op.ended(outcome.proxied_result(self.verdict, error, self.last_error), error, attributes=self.attributes)


class Ending(Protocol):
    def ended(self, error: BaseException | None) -> None: ...


E = TypeVar("E", bound=Ending)


# The sync and async brackets are twins kept side by side: one awaits the loop, the other calls it.
def run_as_current(var: ContextVar[E | None], run: E, loop: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run the library's retry loop with `run` in `var` (where the adapter's hooks inside the loop find it, per thread
    and per task), then ``run.ended()`` with whatever escaped: every adapter that brackets a loop ends it alike."""
    token = var.set(run)
    try:
        value = loop(*args, **kwargs)
    except BaseException as exc:
        _end(run, exc)
        raise
    finally:
        var.reset(token)
    _end(run, None)
    return value


async def run_as_current_async(
    var: ContextVar[E | None], run: E, loop: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """`run_as_current` for a coroutine function's loop."""
    token = var.set(run)
    try:
        value = await loop(*args, **kwargs)
    except BaseException as exc:
        _end(run, exc)
        raise
    finally:
        var.reset(token)
    _end(run, None)
    return value


def _end(run: Ending, error: BaseException | None) -> None:
    try:
        run.ended(error)
    except Exception:
        report_internal_error(f"{type(run).__module__}.{type(run).__qualname__}.ended")
