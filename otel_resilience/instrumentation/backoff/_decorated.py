"""Functions decorated while instrumented: backoff's closure is built twice by its factory, as backoff builds it
(what runs while nothing records) and around a stand-in for the app's function (what runs while something records),
so that each attempt is seen exactly and its span is current while it runs. Both sit behind one function that
brackets the call (`traced`), so every way out is seen, including an exception the decorator does not catch."""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any, Final

from otel_resilience.core import Telemetry, never_raises
from otel_resilience.core.retry import ProxiedAttempts, RetryOperation, run_as_current, run_as_current_async
from otel_resilience.instrumentation.backoff._calls import GIVEUP, SUCCESS, Call, Policy, limit


class DecoratedCall(Call):
    """A call of a function decorated while instrumented: attempts run through the stand-in, in real time."""

    __slots__ = ("attempts", "wait", "claimed")

    def __init__(self, policy: Policy) -> None:
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
        op = RetryOperation.start(telemetry, policy.name, span_name=policy.span_name, max_attempts=limit(self.max_tries))
        if op is not None:
            self.attempts = ProxiedAttempts(op)
            self.wait = wait

    @never_raises
    def retried(self, sent: Any, elapsed: float, seconds: float) -> None:
        assert self.attempts is not None
        if self.policy.predicate_form:
            self.attempts.reject()
        self.attempts.attempt_ended(float(seconds))

    @never_raises
    def ran_out(self, sent: Any, elapsed: float) -> None:
        assert self.attempts is not None
        self.wait_ran_out = True
        if self.policy.predicate_form:
            self.attempts.reject()
        self.attempts.attempt_ended()

    @never_raises
    def before_handlers(self, kind: str | None, details: dict[str, Any]) -> None:
        attempts = self.attempts
        assert attempts is not None
        if kind == GIVEUP:
            attempts.verdict = self.give_up_result(details["tries"], details["elapsed"])
            if self.policy.predicate_form:
                attempts.reject()
            attempts.attempt_ended()
        elif kind == SUCCESS:
            attempts.attempt_ended()

    def ended(self, error: BaseException | None) -> None:
        if self.attempts is not None:
            self.attempts.ended(error)


DECORATED: contextvars.ContextVar[DecoratedCall | None] = contextvars.ContextVar(
    "otel_resilience_backoff_call", default=None
)


class Active:
    """The Telemetry of the current instrumentation. Closures built while instrumented outlive it; they ask here at
    call time (after `uninstrument()` it is disabled, and a later `instrument()` puts a new one here)."""

    telemetry: Telemetry | None = None


def closure_variables(closure: Callable[..., Any]) -> dict[str, Any]:
    code = closure.__code__  # type: ignore[attr-defined]
    return {name: cell.cell_contents for name, cell in zip(code.co_freevars, closure.__closure__ or (), strict=False)}  # type: ignore[attr-defined]


def sync_stand_in(policy: Policy) -> Callable[..., Any]:
    target = policy.target

    def attempt(*args: Any, **kwargs: Any) -> Any:
        call = DECORATED.get()
        if call is None or call.policy is not policy or call.attempts is None:
            return target(*args, **kwargs)
        return call.attempts.run(target, args, kwargs)

    attempt.__wrapped__ = target  # type: ignore[attr-defined]
    return attempt


def async_stand_in(policy: Policy) -> Callable[..., Awaitable[Any]]:
    target = policy.target

    async def attempt(*args: Any, **kwargs: Any) -> Any:
        call = DECORATED.get()
        if call is None or call.policy is not policy or call.attempts is None:
            return await target(*args, **kwargs)
        return await call.attempts.run_async(target, args, kwargs)

    attempt.__wrapped__ = target  # type: ignore[attr-defined]
    return attempt


STAND_IN_CODES: Final = frozenset(
    (sync_stand_in(Policy(len)).__code__, async_stand_in(Policy(len)).__code__)  # type: ignore[attr-defined]
)


def traced(policy: Policy, plain: Callable[..., Any], closure: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(policy.target)
    def traced(*args: Any, **kwargs: Any) -> Any:
        telemetry = Active.telemetry
        if telemetry is None or not telemetry.records():
            return plain(*args, **kwargs)
        return run_as_current(DECORATED, DecoratedCall(policy), closure, args, kwargs)

    return traced


def traced_async(
    policy: Policy, plain: Callable[..., Awaitable[Any]], closure: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(policy.target)
    async def traced(*args: Any, **kwargs: Any) -> Any:
        telemetry = Active.telemetry
        if telemetry is None or not telemetry.records():
            return await plain(*args, **kwargs)
        return await run_as_current_async(DECORATED, DecoratedCall(policy), closure, args, kwargs)

    return traced


@never_raises
def new_policy(target: Any) -> Policy | None:
    return Policy(target)


@never_raises
def learn(policy: Policy, closure: Callable[..., Any]) -> bool:
    policy.learn(closure_variables(closure))
    return True


def decorate(
    factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *, is_async: bool
) -> Callable[..., Any]:
    """What backoff's `factory` (``retry_exception`` and the like) returns when a function is decorated: its closure,
    twice, as backoff builds it (what runs while nothing records, and after uninstrumenting), and around our
    stand-in (what runs while something records)."""
    plain = factory(*args, **kwargs)
    target = args[0] if args else kwargs.get("target")
    policy = new_policy(target)
    if policy is None:
        return plain
    policy.stand_in = async_stand_in(policy) if is_async else sync_stand_in(policy)
    if args:
        closure = factory(policy.stand_in, *args[1:], **kwargs)
    else:
        closure = factory(**{**kwargs, "target": policy.stand_in})
    if not learn(policy, closure):
        return plain
    return traced_async(policy, plain, closure) if is_async else traced(policy, plain, closure)
