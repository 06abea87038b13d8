"""Translate retrying's ``Retrying.call`` loop into core retry events.

Every form goes through ``Retrying.call`` at call time (decorated before instrumentation too): the loop gets a
stand-in for ``fn`` that runs each attempt through `ProxiedAttempts`; ``Retrying.should_reject`` gives retrying's
verdict on each attempt; the instance's ``wait`` strategy, wrapped once in a transparent proxy, gives the wait it
chose. retrying adds its jitter inline before ``time.sleep``, so with jitter the delay is measured instead
(docs/retry-libraries.md).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, Final

import wrapt
from retrying import Attempt, Retrying

from otel_resilience.core import Telemetry, never_raises, outcome
from otel_resilience.core.naming import callable_names
from otel_resilience.core.retry import ProxiedAttempts, RetryOperation, run_as_current
from otel_resilience.patching import Patches

_MS: Final = 1000.0


class _RecordedWait(wrapt.FunctionWrapper):  # type: ignore[misc]
    """The instance's wait strategy, reporting each wait it returns to the operation in flight."""


class _RetryingCall:
    """One ``Retrying.call`` in flight."""

    __slots__ = ("attempts", "retrying", "wait", "jittered")

    def __init__(self, attempts: ProxiedAttempts, retrying: Retrying, wait: object, jittered: bool) -> None:
        self.attempts = attempts
        self.retrying = retrying
        self.wait = wait
        self.jittered = jittered

    def ended(self, error: BaseException | None) -> None:
        self.attempts.ended(error)


_RUN: contextvars.ContextVar[_RetryingCall | None] = contextvars.ContextVar("otel_resilience_retrying_run", default=None)


def _record_wait(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    milliseconds = wrapped(*args, **kwargs)
    run = _RUN.get()
    if run is not None and run.wait is _current_wait(run.retrying):
        _waited(run, milliseconds)
    return milliseconds


@never_raises
def _waited(run: _RetryingCall, milliseconds: Any) -> None:
    # with jitter the wait slept is not this value: the core measures the gap instead
    run.attempts.attempt_ended(None if run.jittered else float(milliseconds) / _MS)


def _current_wait(retrying: Retrying) -> object:
    return vars(retrying).get("wait")


@never_raises
def _recorded_wait(retrying: Retrying) -> object:
    """The instance's wait strategy, wrapped (once) so that the waits it returns are seen."""
    wait = _current_wait(retrying)
    if wait is None or isinstance(wait, _RecordedWait):
        return wait
    recorded = _RecordedWait(wait, _record_wait)
    retrying.wait = recorded
    return recorded


def _max_attempts(retrying: Retrying) -> int | None:
    """The attempt limit, when the stop condition is retrying's own ``stop_max_attempt_number`` (given as
    ``stop="stop_after_attempt"``, or as the default stop that combines it with ``stop_max_delay``)."""
    stop = vars(retrying).get("stop")
    stop_after_attempt = Retrying.stop_after_attempt
    if getattr(stop, "__func__", None) is stop_after_attempt:
        return int(retrying._stop_max_attempt_number)
    code = getattr(stop, "__code__", None)
    if code is None or code.co_name != "<lambda>" or "stop_funcs" not in code.co_freevars:
        return None
    stop_funcs = stop.__closure__[code.co_freevars.index("stop_funcs")].cell_contents  # type: ignore[union-attr]
    if any(getattr(f, "__func__", None) is stop_after_attempt for f in stop_funcs):
        return int(retrying._stop_max_attempt_number)
    return None


class RetryingAdapter:
    """Holds the Telemetry for retrying and installs the hooks."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch(self, patches: Patches) -> None:
        patches.wrap(Retrying, "call", self._call, enabled=self.telemetry.recording)
        patches.wrap(Retrying, "should_reject", self._should_reject, enabled=_RUN.get)

    @never_raises
    def _start(self, retrying: Retrying, fn: Any) -> _RetryingCall | None:
        name, span_name = callable_names(fn)
        # measured_delays: the gap stands in wherever the chosen wait cannot be read (jitter, an unwrappable wait)
        op = RetryOperation.start(
            self.telemetry, name, span_name=span_name, max_attempts=_max_attempts(retrying), measured_delays=True
        )
        if op is None:
            return None
        jittered = bool(getattr(retrying, "_wait_jitter_max", 0))
        return _RetryingCall(ProxiedAttempts(op), retrying, _recorded_wait(retrying), jittered)

    def _call(self, wrapped: Callable[..., Any], instance: Retrying, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not args:
            return wrapped(*args, **kwargs)
        fn = args[0]
        run = self._start(instance, fn)
        if run is None:
            return wrapped(*args, **kwargs)
        attempts = run.attempts

        def stand_in(*fn_args: Any, **fn_kwargs: Any) -> Any:
            return attempts.run(fn, fn_args, fn_kwargs)

        return run_as_current(_RUN, run, wrapped, (stand_in, *args[1:]), kwargs)

    def _should_reject(self, wrapped: Callable[..., Any], instance: Retrying, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        reject = wrapped(*args, **kwargs)
        run = _RUN.get()
        if run is not None and run.retrying is instance:
            _verdict(run, args[0] if args else kwargs["attempt"], reject)
        return reject


@never_raises
def _verdict(run: _RetryingCall, attempt: Attempt, reject: bool) -> None:
    """retrying's verdict on an attempt: another one follows unless its stop condition ends the loop first (then this
    verdict stands: another attempt clears it)."""
    attempts = run.attempts
    if reject:
        attempts.reject()  # a value the policy rejects is a failed attempt
    attempts.verdict = outcome.final_result(retry_wanted=reject, failed=reject or attempt.has_exception)
    if not reject:
        attempts.attempt_ended()
