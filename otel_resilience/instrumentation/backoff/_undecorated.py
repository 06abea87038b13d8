"""Functions decorated before instrumentation: backoff's closure is out of reach, so its call is rebuilt from the
module functions it looks up at call time, and its settings are read from its frame (recognised by the code of the
closures its factories build). Attempts are recorded when the call leaves through one of backoff's exits."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from time import time_ns
from types import CodeType, FrameType, ModuleType
from typing import Any, Final

from otel_resilience import semconv
from otel_resilience.core import RetryOperation, Telemetry, never_raises
from otel_resilience.instrumentation.backoff._calls import FACTORIES, GIVEUP, SUCCESS, Call, Policy, limit

_NS: Final = 1_000_000_000
_FRAMES_TO_SEARCH: Final = 8


class UndecoratedCall(Call):
    """A call of a function decorated before instrumentation: attempts are rebuilt from backoff's hooks and recorded
    when the call leaves through one of backoff's exits (so a call we cannot see end leaves nothing half-done)."""

    __slots__ = ("op", "start_ns", "first_elapsed", "kwargs", "records", "error", "verdict")

    def __init__(self, policy: Policy, op: RetryOperation, variables: Mapping[str, Any]) -> None:
        super().__init__(policy)
        self.op = op
        self.start_ns = time_ns()
        self.first_elapsed: float | None = None
        self.max_tries = variables.get("max_tries_value")
        self.max_time = variables.get("max_time_value")
        self.kwargs = variables["kwargs"]  # the call's own kwargs dict: its identity finds this call in the handlers
        self.records: list[tuple[int, int, BaseException | None, bool, float | None]] = []
        self.error: BaseException | None = None  # what escapes when backoff gives up
        self.verdict = semconv.RESULT_EXHAUSTED

    def _record(self, sent: Any, elapsed: float, next_delay: float | None) -> None:
        error = None if self.policy.predicate_form else sent
        self._append(elapsed, error, self.policy.predicate_form, next_delay)

    def _append(self, elapsed: float, error: BaseException | None, rejected: bool, next_delay: float | None) -> None:
        """An attempt that ended now and began `elapsed` seconds into the call by backoff's clock. backoff starts
        its clock a moment before the loop begins (and our hook); the first attempt follows the hook at once, so
        the times are anchored there. A clock the app replaced (tests) can only put a start as late as the end."""
        end_ns = time_ns()
        if self.first_elapsed is None:
            self.first_elapsed = elapsed
        start_ns = min(self.start_ns + int((elapsed - self.first_elapsed) * _NS), end_ns)
        self.records.append((start_ns, end_ns, error, rejected, next_delay))

    @never_raises
    def retried(self, sent: Any, elapsed: float, seconds: float) -> None:
        self._record(sent, elapsed, float(seconds))

    @never_raises
    def ran_out(self, sent: Any, elapsed: float) -> None:
        self.wait_ran_out = True
        self._record(sent, elapsed, None)
        self.error = None if self.policy.predicate_form else sent  # backoff raises it, whatever raise_on_giveup says

    @never_raises
    def wait_failed(self, error: BaseException) -> None:
        self._end(semconv.RESULT_ABORTED, error)

    @never_raises
    def before_handlers(self, kind: str | None, details: dict[str, Any]) -> None:
        if kind == SUCCESS:
            self._append(details["elapsed"], None, False, None)
        elif kind == GIVEUP:
            self.verdict = self.give_up_result(details["tries"], details["elapsed"])
            if self.wait_ran_out:
                return  # recorded when the wait generator ran out
            policy = self.policy
            # backoff < 2.2 passes no "exception" to give-up handlers; they run inside its `except` block
            error = None if policy.predicate_form else details.get("exception", sys.exc_info()[1])
            self._record(error, details["elapsed"], None)
            if error is not None and policy.raise_on_giveup:
                self.error = error

    @never_raises
    def after_handlers(self, kind: str | None, error: BaseException | None) -> None:
        if kind == SUCCESS:
            self._end(semconv.RESULT_SUCCESS if error is None else semconv.RESULT_ABORTED, error)
        elif kind == GIVEUP:
            self._end(self.verdict, error if error is not None else self.error)
        elif error is not None:  # an on_backoff handler raised: the loop is abandoned
            self._end(semconv.RESULT_ABORTED, error)

    def _end(self, result: str, error: BaseException | None) -> None:
        UNDECORATED.pop(id(self.kwargs), None)
        op = self.op
        for start_ns, end_ns, attempt_error, rejected, next_delay in self.records:
            op.attempt_started(start_ns=start_ns)
            op.attempt_ended(
                attempt_error,
                error_type=semconv.REJECTED_RESULT if rejected else None,
                next_delay=next_delay,
                end_ns=end_ns,
            )
        self.records.clear()
        op.ended(result, error)


# Calls of functions decorated before instrumentation, by the identity of the call's kwargs dict (which the closure
# passes to every handler); entries leave when the call ends, or when its frame is gone (`TracedWait.__del__`).
UNDECORATED: dict[int, UndecoratedCall] = {}


@dataclass(slots=True, eq=False)
class TracedWait:
    """The wait generator of a call decorated before instrumentation, carrying that call to `_next_wait`."""

    generator: Any
    call: UndecoratedCall

    def send(self, value: Any) -> Any:
        """backoff's own `_next_wait` sends here if we were uninstrumented in the middle of a call."""
        return self.generator.send(value)

    def __del__(self) -> None:
        """The call's frame is gone; if the call never reached one of backoff's exits, forget it."""
        try:
            key = id(self.call.kwargs)
            if UNDECORATED.get(key) is self.call:
                UNDECORATED.pop(key, None)
        except Exception:  # interpreter shutdown: module globals may already be gone
            pass


def closure_codes(module: ModuleType) -> set[CodeType]:
    """The code of the `retry` closures that the module's factories build (how a frame is recognised as backoff's)."""
    codes = set()
    for factory in FACTORIES:
        code = getattr(vars(module)[factory], "__code__", None)
        for const in code.co_consts if code is not None else ():
            if isinstance(const, CodeType) and const.co_name == "retry":
                codes.add(const)
    return codes


def closure_frame(codes: frozenset[CodeType]) -> FrameType | None:
    """The frame of backoff's retry closure (its code is one of `codes`) that called the hook: a few frames up from
    the caller (ours, the patch's)."""
    frame: FrameType | None = sys._getframe(1)
    for _ in range(_FRAMES_TO_SEARCH):
        if frame is None or frame.f_code in codes:
            return frame
        frame = frame.f_back
    return None


@never_raises
def begin_undecorated(telemetry: Telemetry, wait: Any, codes: frozenset[CodeType]) -> TracedWait | None:
    """backoff's loop begins in a closure decorated before instrumentation: its call, carried by its wait generator
    (None when nothing records, or the closure is not found)."""
    frame = closure_frame(codes)
    if frame is None:
        return None
    variables = frame.f_locals
    policy = Policy(variables["target"])
    policy.learn(variables)
    op = RetryOperation.start(telemetry, policy.name, span_name=policy.span_name, max_attempts=limit(variables.get("max_tries_value")))
    if op is None:
        return None
    call = UndecoratedCall(policy, op, variables)
    UNDECORATED[id(call.kwargs)] = call
    return TracedWait(wait, call)
