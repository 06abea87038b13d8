"""The breaker observer: library-neutral breaker events in, spans and metrics out.

    entry = REGISTRY.entry(breaker, "pybreaker", lambda: breaker.name or qualname(func))
    call = telemetry.start_breaker_call(entry, "closed")
    token = call.activate()                # the call's span is current while the guarded function runs
    ...
    call.deactivate(token)
    entry.transition(telemetry, "closed", "open", call)   # event on this span, counted once
    call.ended(semconv.CALL_FAILURE, exc, failure_count=5)

One span per user call, named ``circuitbreaker {name}``; `circuitbreaker.state` is the state the call was admitted
or refused in (an adapter may correct it with `admitted_in` once it knows, e.g. a probe admitted half_open).
"""

from __future__ import annotations

import enum
from functools import lru_cache
from time import time_ns
from typing import Any, Final

from opentelemetry import context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context

from otel_resilience import semconv
from otel_resilience.core import errors
from otel_resilience.core._safety import never_raises
from otel_resilience.core.registry import BreakerEntry
from otel_resilience.core.telemetry import Telemetry

_ERROR: Final = Status(StatusCode.ERROR)
_ERROR_RESULTS: Final = frozenset((semconv.CALL_FAILURE, semconv.CALL_REJECTED))

# Spellings seen in the wild, compared with case, "-", "_" and spaces removed: `HALF_OPEN`, `half-open`, `HalfOpen`,
# `half_open`, `OPEN`, `Closed`, purgatory's `opened`/`half-opened`.
_STATE_SPELLINGS: Final = {
    "closed": semconv.STATE_CLOSED,
    "close": semconv.STATE_CLOSED,
    "open": semconv.STATE_OPEN,
    "opened": semconv.STATE_OPEN,
    "halfopen": semconv.STATE_HALF_OPEN,
    "halfopened": semconv.STATE_HALF_OPEN,
}


@lru_cache(maxsize=256)
def _normalise_text(text: str) -> str | None:
    return _STATE_SPELLINGS.get("".join(c for c in text if c not in "-_ \t").lower())


def normalise_state(value: Any) -> str | None:
    """A breaker state as the contract names it (``closed``, ``open``, ``half_open``), or None when unrecognisable.

    Library-neutral, so every adapter (and the drop-in targets) maps states the same way. Accepted: strings in any
    common spelling (``HALF_OPEN``, ``half-open``, ``HalfOpen``, ``half_open``, ``OPEN``, ``Closed``, ``opened``),
    enum members whose name or value is such a string, and state objects whose ``name`` is one (pybreaker's). Reads
    nothing but the value it is given."""
    if isinstance(value, enum.Enum):  # before str: a StrEnum member is also a str
        by_name = _normalise_text(value.name)
        if by_name is not None:
            return by_name
        return _normalise_text(value.value) if isinstance(value.value, str) else None
    if isinstance(value, str):
        return _normalise_text(value)
    name = getattr(value, "name", None)
    return _normalise_text(name) if isinstance(name, str) else None


class BreakerCall:
    """One call through a breaker. Created by `Telemetry.start_breaker_call`."""

    __slots__ = ("_telemetry", "entry", "state", "_span", "_ended")

    @classmethod
    def start(cls, telemetry: Telemetry, entry: BreakerEntry, state: str | None) -> BreakerCall:
        self = cls()
        self._telemetry = telemetry
        self.entry = entry
        self.state = state
        self._ended = False
        if state is not None:
            entry.observe(telemetry, state)
        self._span: Span = telemetry.tracer.start_span(
            f"{semconv.BREAKER_SPAN_PREFIX} {entry.name}",
            kind=SpanKind.INTERNAL,
            attributes={semconv.BREAKER_NAME: entry.name},
        )
        return self

    def activate(self) -> object:
        """Make this call's span current while the guarded function runs; returns a token for `deactivate`."""
        return context.attach(set_span_in_context(self._span))

    @staticmethod
    def deactivate(token: object) -> None:
        context.detach(token)  # type: ignore[arg-type]

    def admitted_in(self, state: str) -> None:
        """Correct the state the call was admitted in (e.g. a call that found an open breaker past its timeout is
        admitted as a half_open probe)."""
        self.state = state

    def add_state_change(self, previous: str, state: str) -> None:
        """Put a `circuitbreaker.state_change` event on this call's span (counting is the registry entry's job)."""
        self._span.add_event(
            semconv.BREAKER_STATE_CHANGE_EVENT,
            {semconv.BREAKER_PREVIOUS_STATE: previous, semconv.BREAKER_STATE: state},
        )

    @never_raises
    def ended(
        self,
        result: str,
        error: BaseException | None = None,
        *,
        failure_count: int | None = None,
    ) -> None:
        """The call is over with `result` (one of ``semconv.BREAKER_RESULTS``); `error` is what the caller received.
        Failures carry type and message only, never a stacktrace: some libraries raise one exception object again
        and again, and its traceback grows each time."""
        if self._ended:
            return
        self._ended = True
        span = self._span
        state = self.state if self.state is not None else self.entry.state
        if failure_count is not None:
            self.entry.failure_count = failure_count
            span.set_attribute(semconv.BREAKER_FAILURE_COUNT, failure_count)
        if state is not None:
            span.set_attribute(semconv.BREAKER_STATE, state)
        span.set_attribute(semconv.BREAKER_RESULT, result)
        if result in _ERROR_RESULTS:
            if error is not None:
                span.set_attribute(semconv.ERROR_TYPE, errors.error_type(error))
                span.add_event(semconv.EXCEPTION_EVENT, errors.exception_attributes(error, stacktrace=False))
            span.set_status(_ERROR)
        span.end(time_ns())
        self._telemetry.breaker_calls.add(
            1,
            {
                semconv.BREAKER_NAME: self.entry.name,
                semconv.BREAKER_STATE: state or semconv.STATE_CLOSED,
                semconv.BREAKER_RESULT: result,
            },
        )
