"""The retry observer: library-neutral retry events in, spans and metrics out.

An adapter reports what its library did; this module alone decides what that looks like in a trace:

    op = telemetry.start_retry("app.fetch_user", span_name="fetch_user", max_attempts=3)
    op.attempt_started()
    token = op.activate()            # the attempt span is current while the attempt runs
    ...                              # the library calls the app's function
    op.deactivate(token)
    op.attempt_ended(exc, next_delay=0.1)
    ...
    op.ended(semconv.RESULT_EXHAUSTED, exc)

An attempt's span is finished when the next attempt starts or the operation ends (with the end time recorded when the
attempt ended), because the measured delay of a drop-in target is only known then. HTTP attempts, which have no
operation span, are `core.http`'s.
"""

from __future__ import annotations

from time import time_ns
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.util.types import AttributeValue

from otel_resilience import semconv
from otel_resilience.core import errors
from otel_resilience.core._safety import never_raises
from otel_resilience.core.config import Settings

if TYPE_CHECKING:
    from otel_resilience.core.telemetry import Telemetry

_DEPTH_KEY: Final = context.create_key("otel_resilience.retry_depth")
_ERROR: Final = Status(StatusCode.ERROR)
_NS: Final = 1e9


def attempt_outcome(
    span: Span,
    attributes: dict[str, Any],
    delay: float | None,
    error_type: str | None,
    error: BaseException | None,
    settings: Settings,
    end_ns: int,
) -> dict[str, Any]:
    """How an attempt ended, on its span (a retried call's or an HTTP attempt's): `retry.delay` and `error.type` join
    `attributes`, which the caller writes with the span's other end attributes in one call; a failure sets status
    ERROR, and a raised error adds its ``exception`` event (with a stacktrace only when the policy is ``all``)."""
    if delay is not None:
        attributes[semconv.RETRY_DELAY] = delay
    if error_type is not None:
        attributes[semconv.ERROR_TYPE] = error_type
        span.set_status(_ERROR)
        if error is not None:
            stacktrace = settings.stacktraces == "all"
            span.add_event(semconv.EXCEPTION_EVENT, errors.exception_attributes(error, stacktrace=stacktrace), end_ns)
    return attributes


def current_depth(ctx: Context | None = None) -> int:
    """How many retry attempts enclose the current code (0 outside any retry)."""
    return context.get_value(_DEPTH_KEY, ctx) or 0  # type: ignore[return-value]


class RetryOperation:
    """One retried call, from its first attempt to its result. Created by `Telemetry.start_retry`."""

    __slots__ = (
        "_telemetry",
        "name",
        "span_name",
        "depth",
        "attempts",
        "total_delay",
        "_span",
        "_ctx",
        "_start_ns",
        "_attempt_span",
        "_attempt_start_ns",
        "_pending",
        "_pending_end_ns",
        "_pending_attributes",
        "_pending_needs_delay",
        "_measured_delays",
        "_last_error_type",
        "_in_attempt",
        "_ended",
    )

    def __init__(self) -> None:  # use RetryOperation.start
        self._pending: Span | None = None
        self._attempt_span: Span | None = None
        self._pending_end_ns = 0
        self._pending_attributes: dict[str, Any] = {}
        self._pending_needs_delay = False
        self._last_error_type: str | None = None
        self._in_attempt = False
        self._ended = False
        self.attempts = 0
        self.total_delay = 0.0

    @classmethod
    def start(
        cls,
        telemetry: Telemetry,
        name: str,
        *,
        span_name: str | None,
        max_attempts: int | None,
        parent: Context | None,
        measured_delays: bool = False,
        start_ns: int | None = None,
    ) -> RetryOperation:
        self = cls()
        self._telemetry = telemetry
        self.name = name
        self.span_name = span_name or name
        parent_ctx = context.get_current() if parent is None else parent
        self.depth = current_depth(parent_ctx) + 1
        self._measured_delays = measured_delays
        self._start_ns = time_ns() if start_ns is None else start_ns
        attributes: dict[str, AttributeValue] = {semconv.RETRY_NAME: name, semconv.RETRY_DEPTH: self.depth}
        if max_attempts is not None:
            attributes[semconv.RETRY_MAX_ATTEMPTS] = max_attempts
        self._span = telemetry.tracer.start_span(
            f"{semconv.RETRY_OPERATION_SPAN_PREFIX} {self.span_name}",
            context=parent_ctx,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=self._start_ns,
        )
        self._ctx = context.set_value(_DEPTH_KEY, self.depth, set_span_in_context(self._span, parent_ctx))
        return self

    # --- attempts ----------------------------------------------------------------------------------------------

    @never_raises
    def attempt_started(self, *, start_ns: int | None = None) -> None:
        """An attempt begins now. `start_ns` is for an adapter that learns of an attempt only after it began (backoff
        decorations made before instrumentation report each attempt when it ended): the attempt's real start time."""
        now = time_ns() if start_ns is None else start_ns
        if self._in_attempt:  # the previous attempt was never reported as ended: close it as it stands
            self.attempt_ended()
        self._finish_pending(now)
        self._in_attempt = True
        self.attempts += 1
        self._attempt_start_ns = now
        mode = self._telemetry.settings.attempt_spans
        if mode == "none" or mode == "on_retry" and self.attempts == 1:
            self._attempt_span = None  # on_retry: created only if this first attempt fails, with its real times
            return
        self._attempt_span = self._new_attempt_span(now)

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
        for `deactivate`. Attach and detach must pair up in the same context, as with any OpenTelemetry context."""
        return context.attach(self.attempt_context)

    @staticmethod
    def deactivate(token: object) -> None:
        context.detach(token)  # type: ignore[arg-type]

    @never_raises
    def attempt_ended(
        self,
        error: BaseException | None = None,
        *,
        error_type: str | None = None,
        next_delay: float | None = None,
        attributes: dict[str, Any] | None = None,
        end_ns: int | None = None,
    ) -> None:
        """The running attempt ended: it raised `error`, or its result was rejected (`error_type`, e.g.
        ``rejected_result`` or ``"503"``), or it succeeded (neither). `next_delay` is the wait the library chose
        before the next attempt (None when no attempt follows, or when the delay is measured instead). Ignored when
        no attempt is running, so an adapter may report an end it is unsure was already reported. `end_ns` is when
        the attempt really ended, for an adapter that learns the verdict later (the library decides after the
        function returned); default: now."""
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
            mode = self._telemetry.settings.attempt_spans
            if mode == "none":
                self._span.add_event(
                    semconv.RETRY_ATTEMPT_EVENT,
                    self._attempt_event_attributes(error, error_type, next_delay),
                    timestamp=end_ns,
                )
                return
            if error_type is None:
                return  # on_retry: a first attempt that succeeded gets no span
            span = self._new_attempt_span(self._attempt_start_ns)
        outcome = attempt_outcome(
            span, dict(attributes) if attributes else {}, next_delay, error_type, error, self._telemetry.settings, end_ns
        )
        self._pending = span
        self._pending_attributes = outcome  # written when the span ends, with what the end adds: one call, one lock
        self._pending_end_ns = end_ns
        self._pending_needs_delay = self._measured_delays and next_delay is None

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

    def _finish_pending(self, next_start_ns: int | None) -> None:
        """End the previous attempt's span; when delays are measured, its delay is the gap until `next_start_ns`."""
        span = self._pending
        if span is None:
            return
        self._pending = None
        attributes = self._pending_attributes
        if self._pending_needs_delay and next_start_ns is not None:
            delay = max(0, next_start_ns - self._pending_end_ns) / _NS
            self.total_delay += delay
            attributes[semconv.RETRY_DELAY] = delay
        if attributes:
            span.set_attributes(attributes)
        span.end(self._pending_end_ns)

    # --- the end -------------------------------------------------------------------------------------------------

    @never_raises
    def ended(
        self,
        result: str | None = None,
        error: BaseException | None = None,
        *,
        error_type: str | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> None:
        """The operation is over. `result` is one of ``semconv.RETRY_RESULTS`` (inferred when None: success unless
        the last attempt failed or `error` escaped); a `BaseException` that is not an `Exception` makes it
        ``aborted`` whatever else was said. `error` is the exception that escaped to the caller, if any.
        `attributes` are more end attributes of the operation span (``retry.stop_reason``). Ignored once the
        operation has ended."""
        if self._ended:
            return
        self._ended = True
        end_ns = time_ns()
        if self._in_attempt:  # ended mid-attempt (cancelled, abandoned): close the attempt as it stands
            self.attempt_ended(error)
        if errors.is_abort(error):
            result = semconv.RESULT_ABORTED
        elif result is None:
            failed = error is not None or self._last_error_type is not None
            result = semconv.RESULT_EXHAUSTED if failed else semconv.RESULT_SUCCESS
        if result != semconv.RESULT_SUCCESS and error_type is None:
            error_type = errors.error_type(error) if error is not None else self._last_error_type
        outcome: dict[str, Any] = {
            semconv.RETRY_ATTEMPTS: self.attempts,
            semconv.RETRY_RESULT: result,
            semconv.RETRY_TOTAL_DELAY: self.total_delay,
        }
        if attributes:
            outcome.update(attributes)
        self._finish_pending(None)
        span = self._span
        if result != semconv.RESULT_SUCCESS:
            if error_type is not None:
                outcome[semconv.ERROR_TYPE] = error_type
            span.set_status(_ERROR)
            if error is not None:
                stacktrace = self._telemetry.settings.stacktraces != "none"
                span.add_event(
                    semconv.EXCEPTION_EVENT, errors.exception_attributes(error, stacktrace=stacktrace), end_ns
                )
        span.set_attributes(outcome)
        span.end(end_ns)
        self._telemetry.record_retry(self.name, result, self.depth, self.attempts, (end_ns - self._start_ns) / _NS)

    @property
    def is_ended(self) -> bool:
        return self._ended

    @property
    def in_attempt(self) -> bool:
        """Whether an attempt has started and not yet been reported as ended."""
        return self._in_attempt
