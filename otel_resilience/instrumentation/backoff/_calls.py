"""What both ways of seeing a backoff call share: the decoration's settings (`Policy`) and one call's verdicts
(`Call`): which attempt was retried with which wait, why backoff gave up, which handlers run."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from otel_resilience.core import outcome
from otel_resilience.core.naming import callable_names

FACTORIES: Final = ("retry_exception", "retry_predicate")
SUCCESS: Final = "on_success"  # which of the closure's handler lists runs (not contract values)
GIVEUP: Final = "on_giveup"
BACKOFF: Final = "on_backoff"


def limit(value: Any) -> int | None:
    """`retry.max_attempts` from backoff's ``max_tries`` value (None: no limit, or not a plain count)."""
    return value if type(value) is int else None


class Policy:
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
            return BACKOFF
        if handlers is self.on_success:
            return SUCCESS
        if handlers is self.on_giveup:
            return GIVEUP
        return None


class Call:
    """One call of a backoff-decorated function; the subclasses differ in how its attempts are seen."""

    __slots__ = ("policy", "max_tries", "max_time", "wait_ran_out")

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.max_tries: Any = None
        self.max_time: Any = None
        self.wait_ran_out = False

    def give_up_result(self, tries: int, elapsed: float) -> str:
        """Why backoff gave up, by its own test: its limits stopped a retry it wanted (a predicate form, a wait
        generator that ran out, or the tries or time spent); otherwise the app's ``giveup`` predicate refused it."""
        limit_reached = (
            self.policy.predicate_form
            or self.wait_ran_out
            or tries == self.max_tries
            or (self.max_time is not None and elapsed >= self.max_time)
        )
        return outcome.final_result(retry_wanted=limit_reached, failed=True)

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
