"""An app's own circuit breaker, traced without editing it: each call of its configured call method is one guarded
call. The helper tells us nothing, so the state is read from the configured attribute before and after the call, and
the admitted state, the transitions and the result are inferred by the heuristics docs/targets.md documents (a call
that never ran the guarded function, watched through a proxy, is ``rejected``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import wrapt

from otel_resilience import semconv
from otel_resilience.core import BreakerCall, Telemetry, never_raises, normalise_state
from otel_resilience.core.breaker import run_call, run_coroutine
from otel_resilience.core.naming import breaker_name
from otel_resilience.patching import Wrapper
from otel_resilience.targets.spec import Resolved, report_no_callable

_logger = logging.getLogger("otel_resilience")


class GuardProxy(wrapt.FunctionWrapper):  # type: ignore[misc]
    """The guarded function as the breaker receives it for one call: notes that it was called."""


class AttributeStateReader:
    """Reads a breaker's state from the configured attribute and maps it to the contract; warns once per target when
    the attribute is missing or holds a value no common spelling matches."""

    __slots__ = ("_path", "_text", "_warned")

    def __init__(self, text: str, path: str) -> None:
        self._text = text
        self._path = path.split(".")
        self._warned = False

    def __call__(self, holder: Any) -> str | None:
        value = holder
        try:
            for part in self._path:
                value = getattr(value, part)
        except Exception as exc:  # an attribute error, or whatever a property raised: never into the app
            self._warn("cannot read the state attribute: %s", exc)
            return None
        state = normalise_state(value)
        if state is None:
            self._warn("its state %r is not a spelling of closed, open or half_open", value)
        return state

    def _warn(self, message: str, detail: Any) -> None:
        if not self._warned:
            self._warned = True
            _logger.warning("otel_resilience: breaker target %r: " + message + " (state not recorded)", self._text, detail)


def _name(holder: Any, guarded: Any) -> str:
    """The breaker's ``name`` attribute when it is a non-empty string, else the first guarded function's name
    (docs/telemetry.md)."""
    own = getattr(holder, "name", None)
    return breaker_name(own if isinstance(own, str) and own else None, guarded, holder)


class _GuardedCall:
    """One call through the breaker, while it runs."""

    __slots__ = ("_target", "_holder", "_guarded", "ran", "_before")

    def __init__(self, target: _BreakerTarget, holder: Any, guarded: Any) -> None:
        self._target = target
        self._holder = holder
        self._guarded = guarded
        self.ran = False
        """Whether the guarded function was called."""
        self._before: str | None = None

    def guarded_called(self, wrapped: Callable[..., Any], _instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The `GuardProxy` wrapper."""
        self.ran = True
        return wrapped(*args, **kwargs)

    @never_raises
    def start(self) -> BreakerCall | None:
        target = self._target
        holder, guarded = self._holder, self._guarded
        self._before = target.read_state(holder)
        return BreakerCall.start(
            target.telemetry,
            holder,
            self._before,
            subject=holder,
            guarded=guarded,
            name_of=_name,
            key=target.state_attr,
            read_state=target.read_state,
        )

    @never_raises
    def end(self, call: BreakerCall, error: BaseException | None) -> None:
        """Read the state after the call, put the transitions on its span, and end it with the result the heuristics
        give (see the module docstring)."""
        after = self._target.read_state(self._holder)
        if not self.ran:
            call.refused_in(self._before)  # None: unreadable, the span gets no state
        elif error is not None:
            call.mark_failure()
        if self.ran and self._before == semconv.STATE_OPEN:
            call.observe(semconv.STATE_HALF_OPEN)  # the probe: admitted half_open
        call.observe(after)
        call.ended(error)


class _BreakerTarget:
    __slots__ = ("telemetry", "target", "state_attr", "owner", "locator", "read_state")

    def __init__(self, telemetry: Telemetry, target: Resolved) -> None:
        assert target.spec.state_attr is not None
        self.telemetry = telemetry
        self.target = target
        self.state_attr = target.spec.state_attr
        """Keys the breaker's registry entry (with the object holding the state): two configured call methods of one
        breaker share one entry, so each transition is counted once."""
        self.owner = target.owner
        self.locator = target.locator
        self.read_state = AttributeStateReader(target.spec.text, target.spec.state_attr)

    @never_raises
    def plan(self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...] | None:
        """(the call, args, kwargs with the guarded function's proxy in its place), or None to stay out of the way."""
        holder = self.owner if instance is None else instance
        found = self.locator.find(args, kwargs)
        if found is None:
            report_no_callable(self.target)
            return None
        if isinstance(found.value, GuardProxy):
            return None  # an outer configured method of this breaker already traces this call
        run = _GuardedCall(self, holder, found.value)
        return (run, *found.replace(args, kwargs, GuardProxy(found.value, run.guarded_called)))


def breaker_wrapper(telemetry: Telemetry, target: Resolved) -> Wrapper:
    """The wrapper that makes each call of a resolved breaker target one guarded call (patched with
    ``enabled=telemetry.recording``: with nothing recording it is not even called)."""
    breaker = _BreakerTarget(telemetry, target)
    is_async = target.is_async

    def call(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        planned = breaker.plan(instance, args, kwargs)
        if planned is None:
            return wrapped(*args, **kwargs)
        run, args, kwargs = planned
        if is_async:
            return run_coroutine(run.start, wrapped, args, kwargs, run.end)
        breaker_call = run.start()
        if breaker_call is None:
            return wrapped(*args, **kwargs)
        return run_call(breaker_call, wrapped, args, kwargs, run.end)

    return call
