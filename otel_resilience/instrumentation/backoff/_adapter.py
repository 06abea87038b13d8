"""Translate backoff's retry loop into core retry events.

backoff builds its retry loop as a closure when a function is decorated: ``backoff.on_exception(...)(fn)`` calls
``backoff._sync.retry_exception`` (or ``retry_predicate``, or their ``backoff._async`` twins) right then, and the
closure keeps everything it needs. So there are two cases.

**Decorated after instrumentation** (everything, under the launcher): the four factories are patched and build two
closures: backoff's own, which runs while nothing records (no SDK, suppressed, and after uninstrumenting), and one
handed a stand-in for the app's function, which runs while something records: each attempt is seen exactly and its
span is current while it runs (the app's spans, and retries nested in it, hang under it). Both sit behind one function
that brackets the call, so every way out is seen, including an exception the decorator does not catch.

**Decorated before instrumentation**: the closure is out of reach, but it looks up three of backoff's module functions
at call time, and those are patched (once something records):

- ``_init_wait_gen``: the loop begins (the operation starts; the closure's settings are read once from its frame);
- ``_next_wait``: an attempt failed and will be retried; its return value is the wait backoff chose (jitter and the
  max_time clip included), never recomputed;
- ``_call_handlers``: the on_success / on_giveup / on_backoff handlers are about to run; the details say which attempt,
  when it started (``elapsed``), and what it returned or raised.

From these the attempts are rebuilt with their real times and recorded when the call leaves through one of backoff's
own exits (success, give-up, a wait generator that ran out). What is lost in that case: a call that ends with an
exception the decorator does not catch is not recorded at all (nothing of backoff's runs after it), and attempts are
never the current span (the app's spans inside an attempt hang under the caller's span, and a retry nested in it
counts one level less).

The same hooks serve the first case too (the wait, the give-up, which handlers run), and put the app's function back
into the handlers' ``details["target"]`` in place of the stand-in: handlers see exactly what they would without us. No
handler of ours is added: the app's handlers run as they are, in their order.
"""

from __future__ import annotations

import contextvars
import functools
import sys
from collections.abc import Awaitable, Callable, Mapping
from time import time_ns
from types import CodeType, FrameType, ModuleType
from typing import Any, Final

from backoff import _async, _sync

from otel_resilience import semconv
from otel_resilience.core import RetryOperation, Telemetry, never_raises, report_internal_error
from otel_resilience.core.naming import callable_names
from otel_resilience.instrumentation._attempts import ProxiedAttempts, run_as_current, run_as_current_async
from otel_resilience.patching import Patches

_FACTORIES: Final = ("retry_exception", "retry_predicate")
_SUCCESS: Final = "on_success"  # which of the closure's handler lists runs (not contract values)
_GIVEUP: Final = "on_giveup"
_BACKOFF: Final = "on_backoff"
_NS: Final = 1_000_000_000
_FRAMES_TO_SEARCH: Final = 8


def _limit(value: Any) -> int | None:
    """`retry.max_attempts` from backoff's ``max_tries`` value (None: no limit, or not a plain count)."""
    return value if type(value) is int else None


class _Policy:
    """What one backoff decoration does, read from its closure's variables."""

    __slots__ = ("target", "name", "span_name", "stand_in", "predicate_form", "max_tries", "max_time", "raise_on_giveup",
                 "on_success", "on_giveup", "on_backoff")

    def __init__(self, target: Callable[..., Any]) -> None:
        self.target = target
        self.name, self.span_name = callable_names(target)
        self.stand_in: Callable[..., Any] | None = None

    def learn(self, variables: Mapping[str, Any]) -> None:
        self.predicate_form = "predicate" in variables
        self.max_tries = variables.get("max_tries")
        self.max_time = variables.get("max_time")
        self.raise_on_giveup = bool(variables.get("raise_on_giveup", True))
        self.on_success = variables.get("on_success")
        self.on_giveup = variables.get("on_giveup")
        self.on_backoff = variables.get("on_backoff")

    def handlers_kind(self, handlers: object) -> str | None:
        """Which of the closure's handler lists is about to run (by identity: the details cannot tell a successful
        predicate call from a give-up)."""
        if handlers is self.on_backoff:
            return _BACKOFF
        if handlers is self.on_success:
            return _SUCCESS
        if handlers is self.on_giveup:
            return _GIVEUP
        return None


class _Call:
    """One call of a backoff-decorated function; the subclasses differ in how its attempts are seen."""

    __slots__ = ("policy", "max_tries", "max_time", "wait_ran_out")

    def __init__(self, policy: _Policy) -> None:
        self.policy = policy
        self.max_tries: Any = None
        self.max_time: Any = None
        self.wait_ran_out = False

    def give_up_result(self, tries: int, elapsed: float) -> str:
        """Why backoff gave up, by its own test: the limits (or a wait generator that ran out) mean ``exhausted``;
        otherwise the app's ``giveup`` predicate said so: ``not_retried``."""
        if self.policy.predicate_form or self.wait_ran_out:
            return semconv.RESULT_EXHAUSTED
        if tries == self.max_tries or (self.max_time is not None and elapsed >= self.max_time):
            return semconv.RESULT_EXHAUSTED
        return semconv.RESULT_NOT_RETRIED

    def retried(self, sent: Any, elapsed: float, seconds: float) -> None:
        raise NotImplementedError

    def ran_out(self, sent: Any, elapsed: float) -> None:
        raise NotImplementedError

    def wait_failed(self, error: BaseException) -> None:
        """Computing the next wait raised (jitter, a custom wait generator): it escapes the loop."""

    def before_handlers(self, kind: str | None, details: dict[str, Any]) -> None:
        raise NotImplementedError

    def after_handlers(self, kind: str | None, error: BaseException | None) -> None:
        """The handlers ran (`error`: what they raised)."""


class _DecoratedCall(_Call):
    """A call of a function decorated while instrumented: attempts run through the stand-in, in real time."""

    __slots__ = ("attempts", "wait", "claimed")

    def __init__(self, policy: _Policy) -> None:
        super().__init__(policy)
        self.attempts: ProxiedAttempts | None = None
        self.wait: object = None
        self.claimed = False

    @never_raises
    def begin(self, telemetry: Telemetry, wait: object, frame: FrameType | None) -> None:
        policy = self.policy
        self.max_tries, self.max_time = policy.max_tries, policy.max_time
        if frame is not None:  # a limit given as a callable: backoff evaluated it at call time
            self.max_tries = frame.f_locals.get("max_tries_value")
            self.max_time = frame.f_locals.get("max_time_value")
        op = telemetry.start_retry(policy.name, span_name=policy.span_name, max_attempts=_limit(self.max_tries))
        if op is not None:
            self.attempts = ProxiedAttempts(op)
            self.wait = wait

    @never_raises
    def retried(self, sent: Any, elapsed: float, seconds: float) -> None:
        assert self.attempts is not None
        if self.policy.predicate_form:
            self.attempts.reject()
        self.attempts.close(float(seconds))

    @never_raises
    def ran_out(self, sent: Any, elapsed: float) -> None:
        assert self.attempts is not None
        self.wait_ran_out = True
        if self.policy.predicate_form:
            self.attempts.reject()
        self.attempts.close()

    @never_raises
    def before_handlers(self, kind: str | None, details: dict[str, Any]) -> None:
        attempts = self.attempts
        assert attempts is not None
        if kind == _GIVEUP:
            attempts.verdict = self.give_up_result(details["tries"], details["elapsed"])
            if self.policy.predicate_form:
                attempts.reject()
            attempts.close()
        elif kind == _SUCCESS:
            attempts.close()

    def finish(self, error: BaseException | None) -> None:
        if self.attempts is not None:
            self.attempts.finish(error)


class _UndecoratedCall(_Call):
    """A call of a function decorated before instrumentation: attempts are rebuilt from backoff's hooks and recorded
    when the call leaves through one of backoff's exits (so a call we cannot see end leaves nothing half-done)."""

    __slots__ = ("op", "start_ns", "first_elapsed", "kwargs", "records", "error", "verdict")

    def __init__(self, policy: _Policy, op: RetryOperation, variables: Mapping[str, Any]) -> None:
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
        if kind == _SUCCESS:
            self._append(details["elapsed"], None, False, None)
        elif kind == _GIVEUP:
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
        if kind == _SUCCESS:
            self._end(semconv.RESULT_SUCCESS if error is None else semconv.RESULT_ABORTED, error)
        elif kind == _GIVEUP:
            self._end(self.verdict, error if error is not None else self.error)
        elif error is not None:  # an on_backoff handler raised: the loop is abandoned
            self._end(semconv.RESULT_ABORTED, error)

    def _end(self, result: str, error: BaseException | None) -> None:
        _UNDECORATED.pop(id(self.kwargs), None)
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


_DECORATED: contextvars.ContextVar[_DecoratedCall | None] = contextvars.ContextVar(
    "otel_resilience_backoff_call", default=None
)
# Calls of functions decorated before instrumentation, by the identity of the call's kwargs dict (which the closure
# passes to every handler); entries leave when the call ends, or when its frame is gone (`_TracedWait.__del__`).
_UNDECORATED: dict[int, _UndecoratedCall] = {}


class _TracedWait:
    """The wait generator of a call decorated before instrumentation, carrying that call to `_next_wait`."""

    __slots__ = ("generator", "call")

    def __init__(self, generator: Any, call: _UndecoratedCall) -> None:
        self.generator = generator
        self.call = call

    def send(self, value: Any) -> Any:
        """backoff's own `_next_wait` sends here if we were uninstrumented in the middle of a call."""
        return self.generator.send(value)

    def __del__(self) -> None:
        """The call's frame is gone; if the call never reached one of backoff's exits, forget it."""
        try:
            key = id(self.call.kwargs)
            if _UNDECORATED.get(key) is self.call:
                _UNDECORATED.pop(key, None)
        except Exception:  # interpreter shutdown: module globals may already be gone
            pass


class _Active:
    """The adapter of the current instrumentation. Closures built while instrumented outlive it; they ask here at
    call time (after `uninstrument()` its Telemetry is disabled, and a later `instrument()` puts a new one here)."""

    adapter: BackoffAdapter | None = None


def _closure_codes(module: ModuleType) -> set[CodeType]:
    """The code of the `retry` closures that the module's factories build (how a frame is recognised as backoff's)."""
    codes = set()
    for factory in _FACTORIES:
        code = getattr(vars(module)[factory], "__code__", None)
        for const in code.co_consts if code is not None else ():
            if isinstance(const, CodeType) and const.co_name == "retry":
                codes.add(const)
    return codes


def _closure_variables(closure: Callable[..., Any]) -> dict[str, Any]:
    code = closure.__code__  # type: ignore[attr-defined]
    return {name: cell.cell_contents for name, cell in zip(code.co_freevars, closure.__closure__ or (), strict=False)}  # type: ignore[attr-defined]


def _sync_stand_in(policy: _Policy) -> Callable[..., Any]:
    target = policy.target

    def attempt(*args: Any, **kwargs: Any) -> Any:
        call = _DECORATED.get()
        if call is None or call.policy is not policy or call.attempts is None:
            return target(*args, **kwargs)
        return call.attempts.run(target, args, kwargs)

    attempt.__wrapped__ = target  # type: ignore[attr-defined]
    return attempt


def _async_stand_in(policy: _Policy) -> Callable[..., Awaitable[Any]]:
    target = policy.target

    async def attempt(*args: Any, **kwargs: Any) -> Any:
        call = _DECORATED.get()
        if call is None or call.policy is not policy or call.attempts is None:
            return await target(*args, **kwargs)
        return await call.attempts.run_async(target, args, kwargs)

    attempt.__wrapped__ = target  # type: ignore[attr-defined]
    return attempt


_STAND_IN_CODES: Final = frozenset(
    (_sync_stand_in(_Policy(len)).__code__, _async_stand_in(_Policy(len)).__code__)  # type: ignore[attr-defined]
)


def _traced(policy: _Policy, plain: Callable[..., Any], closure: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(policy.target)
    def traced(*args: Any, **kwargs: Any) -> Any:
        adapter = _Active.adapter
        if adapter is None or not adapter.telemetry.records():
            return plain(*args, **kwargs)
        return run_as_current(_DECORATED, _DecoratedCall(policy), closure, args, kwargs)

    return traced


def _traced_async(
    policy: _Policy, plain: Callable[..., Awaitable[Any]], closure: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(policy.target)
    async def traced(*args: Any, **kwargs: Any) -> Any:
        adapter = _Active.adapter
        if adapter is None or not adapter.telemetry.records():
            return await plain(*args, **kwargs)
        return await run_as_current_async(_DECORATED, _DecoratedCall(policy), closure, args, kwargs)

    return traced


class BackoffAdapter:
    """Holds the Telemetry for backoff and installs the hooks."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self._closure_codes: frozenset[CodeType] = frozenset()

    def patch(self, patches: Patches) -> None:
        """The factories, and the call-time hooks (with no SDK a decorated function runs backoff's own closure:
        those hooks then cost only their check)."""
        self._closure_codes = frozenset(_closure_codes(_sync) | _closure_codes(_async))
        for module, is_async in ((_sync, False), (_async, True)):
            for factory in _FACTORIES:
                patches.wrap(module, factory, functools.partial(self._decorate, is_async=is_async))
        may_record = self.telemetry.may_record
        for module in (_sync, _async):
            patches.wrap(module, "_init_wait_gen", self._loop_begins, enabled=self.telemetry.recording)
            patches.wrap(module, "_next_wait", self._next_wait, enabled=may_record)
        patches.wrap(_sync, "_call_handlers", self._handlers, enabled=may_record)
        patches.wrap(_async, "_call_handlers", self._handlers_async, enabled=may_record)
        _Active.adapter = self

    # --- decoration (after instrumentation) ------------------------------------------------------------------------

    def _decorate(
        self, wrapped: Callable[..., Any], instance: None, args: tuple[Any, ...], kwargs: dict[str, Any], *, is_async: bool
    ) -> Callable[..., Any]:
        """backoff's closure, twice: as backoff builds it (what runs while nothing records, and after
        uninstrumenting), and around our stand-in (what runs while something records)."""
        plain = wrapped(*args, **kwargs)
        target = args[0] if args else kwargs.get("target")
        policy = _new_policy(target)
        if policy is None:
            return plain
        policy.stand_in = _async_stand_in(policy) if is_async else _sync_stand_in(policy)
        if args:
            closure = wrapped(policy.stand_in, *args[1:], **kwargs)
        else:
            closure = wrapped(**{**kwargs, "target": policy.stand_in})
        if not _learn(policy, closure):
            return plain
        return _traced_async(policy, plain, closure) if is_async else _traced(policy, plain, closure)

    # --- call-time hooks -------------------------------------------------------------------------------------------

    def _loop_begins(self, wrapped: Callable[..., Any], instance: None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        wait = wrapped(*args, **kwargs)
        call = _DECORATED.get()
        if call is not None and not call.claimed:
            call.claimed = True
            policy = call.policy
            limits_are_callables = callable(policy.max_tries) or callable(policy.max_time)
            call.begin(self.telemetry, wait, self._closure_frame() if limits_are_callables else None)
            return wait
        traced = self._begin_undecorated(wait)
        return wait if traced is None else traced

    @never_raises
    def _begin_undecorated(self, wait: Any) -> _TracedWait | None:
        frame = self._closure_frame()
        if frame is None:
            return None
        variables = frame.f_locals
        policy = _Policy(variables["target"])
        policy.learn(variables)
        op = self.telemetry.start_retry(
            policy.name, span_name=policy.span_name, max_attempts=_limit(variables.get("max_tries_value"))
        )
        if op is None:
            return None
        call = _UndecoratedCall(policy, op, variables)
        _UNDECORATED[id(call.kwargs)] = call
        return _TracedWait(wait, call)

    def _closure_frame(self) -> FrameType | None:
        """The frame of backoff's retry closure that called the hook (a few frames up: ours, the patch's)."""
        frame: FrameType | None = sys._getframe(1)
        for _ in range(_FRAMES_TO_SEARCH):
            if frame is None or frame.f_code in self._closure_codes:
                return frame
            frame = frame.f_back
        return None

    def _next_wait(self, wrapped: Callable[..., Any], instance: None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        wait = args[0]
        call: _Call | None
        if type(wait) is _TracedWait:
            call = wait.call
            args = (wait.generator, *args[1:])
        else:
            call = _DECORATED.get()
            if call is None or call.wait is not wait:  # type: ignore[union-attr]
                return wrapped(*args, **kwargs)
        try:
            seconds = wrapped(*args, **kwargs)
        except StopIteration:
            call.ran_out(args[1], args[3])
            raise
        except BaseException as exc:
            call.wait_failed(exc)
            raise
        call.retried(args[1], args[3], seconds)
        return seconds

    def _handlers(self, wrapped: Callable[..., Any], instance: None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call, kind = _route(args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        call.before_handlers(kind, kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            call.after_handlers(kind, exc)
            raise
        call.after_handlers(kind, None)
        return result

    def _handlers_async(
        self, wrapped: Callable[..., Awaitable[Any]], instance: None, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Awaitable[Any]:
        call, kind = _route(args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        return _run_async_handlers(wrapped, args, kwargs, call, kind)


async def _run_async_handlers(
    wrapped: Callable[..., Awaitable[Any]], args: tuple[Any, ...], kwargs: dict[str, Any], call: _Call, kind: str | None
) -> Any:
    call.before_handlers(kind, kwargs)
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        call.after_handlers(kind, exc)
        raise
    call.after_handlers(kind, None)
    return result


def _route(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[_Call | None, str | None]:
    """The call whose handlers are about to run, and which handlers; puts the app's function back in place of our
    stand-in in what the handlers receive."""
    try:
        return _find_call(args, kwargs)
    except Exception:
        report_internal_error("backoff handlers hook")
        return None, None


def _find_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[_Call | None, str | None]:
    target = kwargs.get("target")
    if getattr(target, "__code__", None) in _STAND_IN_CODES:
        kwargs["target"] = target.__wrapped__  # type: ignore[union-attr]
        call: _Call | None = _DECORATED.get()
        if call is None or call.policy.stand_in is not target or call.attempts is None:  # type: ignore[attr-defined]
            return None, None
    elif _UNDECORATED:
        call = _UNDECORATED.get(id(kwargs.get("kwargs")))
        if call is None or call.policy.target is not target:
            return None, None
    else:
        return None, None
    return call, call.policy.handlers_kind(args[0] if args else None)


@never_raises
def _new_policy(target: Any) -> _Policy | None:
    return _Policy(target)


@never_raises
def _learn(policy: _Policy, closure: Callable[..., Any]) -> bool:
    policy.learn(_closure_variables(closure))
    return True
