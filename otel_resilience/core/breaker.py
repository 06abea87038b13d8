"""The breaker observer: an adapter reports a library's breaker events to a `BreakerCall`, which alone decides what
they look like in a trace (docs/telemetry.md); the registry lookup and the transition counting; and the helpers that
run the guarded work with the call current, the same way for every breaker adapter. A hook deep inside a library finds
its call with `current_call(subject)`: an active call is current per thread and per asyncio task."""

from __future__ import annotations

import enum
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextvars import ContextVar
from functools import lru_cache
from time import time_ns
from types import GeneratorType
from typing import Any, Final, TypeVar

from opentelemetry import context
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.util.types import AttributeValue

from otel_resilience import semconv
from otel_resilience.core import errors, outcome
from otel_resilience.core._safety import never_raises, report_internal_error
from otel_resilience.core.naming import breaker_name
from otel_resilience.core.registry import REGISTRY, BreakerEntry, StateReader
from otel_resilience.core.telemetry import NO_SPAN, Telemetry

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


_EXACT: Final = {
    spelling: state
    for state in semconv.BREAKER_STATES
    for spelling in (state, state.upper(), state.replace("_", "-"), state.replace("_", "-").upper())
}
"""The common spellings, looked up before anything else: a state is read on every call."""


@lru_cache(maxsize=256)
def _normalise_text(text: str) -> str | None:
    return _STATE_SPELLINGS.get("".join(c for c in text if c not in "-_ \t").lower())


def normalise_state(value: Any) -> str | None:
    """A breaker state as the contract names it (``closed``, ``open``, ``half_open``), or None when unrecognisable.

    Library-neutral, so every adapter (and the drop-in targets) maps states the same way. Accepted: strings in any
    common spelling (``HALF_OPEN``, ``half-open``, ``HalfOpen``, ``half_open``, ``OPEN``, ``Closed``, ``opened``),
    enum members whose name or value is such a string, and state objects whose ``name`` is one (pybreaker's). Reads
    nothing but the value it is given."""
    if type(value) is str:
        return _EXACT.get(value) or _normalise_text(value)
    if isinstance(value, enum.Enum):  # before str: a StrEnum member is also a str
        by_name = _EXACT.get(value._name_) or _normalise_text(value._name_)
        if by_name is not None:
            return by_name
        return _normalise_text(value.value) if isinstance(value.value, str) else None
    if isinstance(value, str):
        return _normalise_text(value)
    name = getattr(value, "name", None)
    return _normalise_text(name) if isinstance(name, str) else None


T = TypeVar("T")
EndCall = Callable[["BreakerCall", "BaseException | None"], None]
"""An adapter's end of a call: read what the library concluded (state after, failure count), then `BreakerCall.ended`.
It gets the exception the caller receives, or None, and must never raise (decorate it with `never_raises`)."""
Start = Callable[[], "BreakerCall | None"]
Namer = Callable[[Any, Any], str]
"""``(breaker, guarded)`` -> ``circuitbreaker.name``: called once, when a breaker is first seen."""


def default_name(breaker: Any, guarded: Any) -> str:
    """The breaker's own ``name``, else the first guarded function's ``module.qualname`` (`naming.breaker_name`)."""
    return breaker_name(getattr(breaker, "name", None), guarded, breaker)

_CURRENT: ContextVar[BreakerCall | None] = ContextVar("otel_resilience_breaker_call", default=None)


any_active_call: Final = _CURRENT.get
"""Truthy while some breaker call is active in this thread or task: the cheap `enabled` check (a C callable) of the
hooks that only matter inside a call (a failure being counted, a state being swapped)."""


def current_call(subject: object) -> BreakerCall | None:
    """The active call through `subject` (the library object the adapter's hooks see: a breaker, a context) in this
    thread or task; the innermost one if the guarded code went through the same breaker again."""
    call = _CURRENT.get()
    while call is not None:
        if call.subject is subject:
            return call
        call = call._outer
    return None


def _the_instance(instance: Any, _args: tuple[Any, ...]) -> object:
    return instance


def failure_hook(subject_of: Callable[[Any, tuple[Any, ...]], object] = _the_instance) -> Callable[..., Any]:
    """A patch (``wrapper(wrapped, instance, args, kwargs)``) for the library method that counts a failure: it marks
    the active call through ``subject_of(instance, args)`` (default: the instance, the breaker) as failed, then lets
    the library count."""

    @never_raises
    def mark(instance: Any, args: tuple[Any, ...]) -> None:
        call = current_call(subject_of(instance, args))
        if call is not None:
            call.mark_failure()

    def counted(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        mark(instance, args)
        return wrapped(*args, **kwargs)

    return counted


def admitted(subject: object, state: Any) -> None:
    """The library is about to run the guarded function of the active call through `subject`, in `state` (any
    spelling `normalise_state` takes; closed when unreadable). Only the first admission counts: a call the library
    re-enters for a probe is admitted in the state it finally ran in."""
    try:  # guarded inline, not by a `never_raises` layer: this runs on every call
        call = current_call(subject)
        if call is not None and not call.admitted:
            call.admitted_in(normalise_state(state) or semconv.STATE_CLOSED)
    except Exception:
        report_internal_error("otel_resilience.core.breaker.admitted")


def refused(subject: object) -> None:
    """The library's open check refused the active call through `subject`. An error passing the check after the
    call was admitted (a failing probe's, raised through a library that re-entered its own call) is no refusal."""
    try:  # guarded inline, not by a `never_raises` layer: this runs on every call
        call = current_call(subject)
        if call is not None and not call.admitted:
            call.refused_in(semconv.STATE_OPEN)
    except Exception:
        report_internal_error("otel_resilience.core.breaker.refused")


@never_raises
def reported_transition(
    telemetry: Telemetry,
    subject: object,
    previous: Any,
    state: Any,
    *,
    breaker: Any = None,
    name_of: Namer = default_name,
    read_state: StateReader | None = None,
) -> None:
    """A library reported (told its listeners, or swapped its state object) `previous` -> `state`, in any spelling
    `normalise_state` takes. Counted once, with the event on the span of the call through `subject` that caused it;
    with no call of ours running (``breaker.open()`` by hand, a state refreshed from shared storage), counted against
    `breaker`'s registry entry (None: left to be seen at the next call)."""
    if not telemetry.recording():
        return
    previous, state = normalise_state(previous), normalise_state(state)
    if previous is None or state is None:
        return
    call = current_call(subject)
    if call is not None:
        entry = call.entry
    elif breaker is not None:
        entry = REGISTRY.entry(breaker, telemetry.library, name_of, read_state=read_state)
    else:
        return
    if entry.transition(previous, state):
        _count_transition(telemetry, entry, previous, state, call)


def _count_transition(
    telemetry: Telemetry, entry: BreakerEntry, previous: str, state: str, call: BreakerCall | None
) -> None:
    telemetry.record_transition(entry.name, previous, state)
    if call is not None:
        call.add_state_change(previous, state)


class BreakerCall:
    """One call through a breaker. Its methods guard themselves (core/_safety.py)::

        call = BreakerCall.start(telemetry, breaker, "closed", subject=breaker, guarded=func)  # None: not recording
        token = call.activate()              # the call's span is current while the guarded function runs
        ...
        call.deactivate(token)
        call.mark_failure()                  # from the library's failure hook (`current_call(breaker)` finds it)
        call.ended(exc, failure_count=5)     # result failure (`outcome.breaker_result`)
    """

    __slots__ = (
        "_telemetry", "entry", "state", "subject", "admitted", "failed", "refused", "_outer", "_token", "_span",
        "_recording", "_ended",
    )

    @classmethod
    def start(
        cls,
        telemetry: Telemetry,
        breaker: Any,
        state: str | None,
        *,
        subject: object = None,
        guarded: Any = None,
        name_of: Namer = default_name,
        key: Any = None,
        read_state: StateReader | None = None,
    ) -> BreakerCall | None:
        """Start observing one call through `breaker`, admitted (so far) in `state`; None when nothing records. The
        breaker's registry entry (keyed on `breaker` and `key`, named ``name_of(breaker, guarded)`` when first seen,
        its state read by `read_state` for the gauge) is looked up only then: a call while instrumentation is
        suppressed leaves no trace, not even in the registry. `subject` is the library object by which the adapter's
        inner hooks find the call again (`current_call`). Under a parent whose children can never be recorded
        (core/sampling.py) the call gets no span (the guarded work runs in the parent's context), only its counter."""
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            ctx = context.get_current()
            if not telemetry.recording(ctx):
                return None
            entry = REGISTRY.entry(breaker, telemetry.library, name_of, guarded, key=key, read_state=read_state)
            return cls(telemetry, entry, state, subject, ctx)
        except Exception:
            report_internal_error("otel_resilience.core.breaker.BreakerCall.start")
            return None

    def __init__(
        self, telemetry: Telemetry, entry: BreakerEntry, state: str | None, subject: object, ctx: Context
    ) -> None:
        self._telemetry = telemetry
        self.entry = entry
        self.state = state
        self.subject = subject
        self.admitted = False
        self.failed = False
        self.refused = False
        self._outer: BreakerCall | None = None
        self._token: object | None = None
        self._ended = False
        if telemetry.never_recorded_under(ctx):
            self._span: Span | None = None
            self._recording = False
        else:
            span = self._span = telemetry.tracer.start_span(
                entry.span_name,
                context=ctx,
                kind=SpanKind.INTERNAL,
                attributes={semconv.BREAKER_NAME: entry.name},
            )
            self._recording = span.is_recording()  # if not, what it would be given at its end is never built
        if state is not None:
            self._observe(state)  # a change first seen by this call goes on its span

    @never_raises
    def observe(self, state: str | None) -> None:
        """The breaker is seen in `state` now (by this call): a change from the state last seen is counted here, once,
        with its event on this call's span."""
        self._observe(state)

    def _observe(self, state: str | None) -> None:
        previous = self.entry.observe(state)
        if previous is not None:
            _count_transition(self._telemetry, self.entry, previous, state, self)  # type: ignore[arg-type]

    def activate(self) -> object | None:
        """Make this call's span current, and this call the one `current_call` finds, while the guarded work runs;
        returns a token for `deactivate`. Never raises, since the app's own code runs next: an error of ours is
        reported and the work runs without the call current (the token is then None). The guard is inline, not a
        `never_raises` layer: this runs on every call."""
        try:
            outer = _CURRENT.get()
            if outer is not self:
                self._outer = outer
            span = self._span
            return None if span is None else context.attach(set_span_in_context(span)), _CURRENT.set(self)
        except Exception:
            report_internal_error("otel_resilience.core.breaker.BreakerCall.activate")
            return None

    @staticmethod
    def deactivate(token: object | None) -> None:
        """Undo `activate` (nothing to do for a token that never was). Never raises, like `activate`."""
        if token is None:
            return
        try:
            otel_token, call_token = token  # type: ignore[misc]
            try:
                _CURRENT.reset(call_token)
            except (ValueError, RuntimeError):  # reset from another context (a generator resumed by another task)
                _CURRENT.set(None)
            if otel_token is not None:
                context.detach(otel_token)
        except Exception:
            report_internal_error("otel_resilience.core.breaker.BreakerCall.deactivate")

    def enter_block(self) -> None:
        """`activate` for a with-block whose end is another hook (``__enter__`` … ``__exit__``): the call keeps the
        token until `exit_block`. Blocks nest in order within a thread or task, so the innermost is exited first."""
        self._token = self.activate()

    def exit_block(self) -> None:
        token, self._token = self._token, None
        self.deactivate(token)

    @never_raises
    def admitted_in(self, state: str) -> None:
        """Correct the state the call was admitted in (e.g. a call that found an open breaker past its timeout is
        admitted as a half_open probe). Once admitted, the guarded function runs: a call it makes through the same
        breaker is a new user call, not the library re-entering its own."""
        self.state = state
        self.admitted = True

    @never_raises
    def refused_in(self, state: str | None) -> None:
        """The breaker refused the call in `state`: the guarded function does not run (result `rejected`)."""
        self.state = state
        self.refused = True

    def mark_failure(self) -> None:
        """The breaker counted this call's outcome as a failure (result `failure`)."""
        self.failed = True

    @never_raises
    def add_state_change(self, previous: str, state: str) -> None:
        """Put a `circuitbreaker.state_change` event on this call's span (counting is `_count_transition`'s).
        A call that moves an open breaker to half_open is that breaker's probe: it is admitted half_open."""
        if self._recording:
            self._span.add_event(  # type: ignore[union-attr]
                semconv.BREAKER_STATE_CHANGE_EVENT,
                {semconv.BREAKER_PREVIOUS_STATE: previous, semconv.BREAKER_STATE: state},
            )
        if previous == semconv.STATE_OPEN and state == semconv.STATE_HALF_OPEN and not self.refused:
            self.state = semconv.STATE_HALF_OPEN

    def ended(
        self, error: BaseException | None, *, failure_count: int | None = None, error_type: str | None = None
    ) -> None:
        """The call is over; `error` is what the caller received. Its result follows from the marks
        (`outcome.breaker_result`). Failures carry type and message only, never a stacktrace: some libraries raise
        one exception object again and again, and its traceback grows each time. `error_type` names the error where
        there is no exception object (a refusal answered by a fallback). Ignored once the call has ended."""
        try:  # guarded inline, as `start`
            if self._ended:
                return
            self._ended = True
            result = outcome.breaker_result(refused=self.refused, failed=self.failed, error=error)
            state = self.state if self.state is not None else self.entry.state
            self.entry.failure_count = failure_count  # None: the library does not expose it (now): unknown, not stale
            span = self._span
            if span is not None and self._recording:
                attributes: dict[str, AttributeValue] = {semconv.BREAKER_RESULT: result}
                if state is not None:
                    attributes[semconv.BREAKER_STATE] = state
                if failure_count is not None:
                    attributes[semconv.BREAKER_FAILURE_COUNT] = failure_count
                if result in _ERROR_RESULTS:
                    if error is not None:
                        attributes[semconv.ERROR_TYPE] = error_type or errors.error_type(error)
                        span.add_event(semconv.EXCEPTION_EVENT, errors.exception_attributes(error, stacktrace=False))
                    elif error_type is not None:
                        attributes[semconv.ERROR_TYPE] = error_type
                    span.set_status(_ERROR)
                span.set_attributes(attributes)  # one call: the SDK takes its span lock per call
                span.end(time_ns())
            self._telemetry.breaker_calls.add(
                1,
                {
                    semconv.BREAKER_NAME: self.entry.name,
                    semconv.BREAKER_STATE: state or semconv.STATE_CLOSED,
                    semconv.BREAKER_RESULT: result,
                },
                NO_SPAN,  # the SDK's counter exemplars would draw from the global `random` (core/telemetry.py)
            )
        except Exception:
            report_internal_error("otel_resilience.core.breaker.BreakerCall.ended")


def counting_end(failure_count: Callable[[Any], int | None], where: str) -> EndCall:
    """The `EndCall` of a library whose breaker (the call's subject) holds the failure count: the count the library
    reached goes on the call. Guarded inline (`where` names the adapter's reader), not by a `never_raises` layer:
    this runs on every call."""

    def end(call: BreakerCall, error: BaseException | None) -> None:
        try:
            call.ended(error, failure_count=failure_count(call.subject))
        except Exception:
            report_internal_error(where)

    return end


# --- running the guarded work with the call current (every adapter alike) ---------------------------------------


def run_call(
    call: BreakerCall,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    end: EndCall,
    *,
    follow_generators: bool = False,
    generator_is_block: bool = False,
) -> T:
    """Run ``fn(*args, **kwargs)`` with `call` current, then end it with `end`. With `follow_generators`, a generator
    returned by `fn` (a library that judges a guarded generator as it is consumed) carries the call on; with
    `generator_is_block` too, that generator is the library's with-block (pybreaker's ``calling()``), and the call
    stays current through the block's body (`continue_block`)."""
    token = call.activate()
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        _deactivate_and_end(call, token, end, exc)
        raise
    BreakerCall.deactivate(token)
    if follow_generators and type(result) is GeneratorType:  # as the libraries test it; an ABC check costs more
        if generator_is_block:
            return continue_block(call, result, end)  # type: ignore[return-value]
        return continue_generator(call, result, end)  # type: ignore[return-value]
    end(call, None)
    return result


def continue_block(call: BreakerCall, gen: Generator[Any, Any, T], end: EndCall) -> Generator[Any, Any, T]:
    """Drive the generator behind a generator-based with-block (``contextlib.contextmanager``): the call is current
    from the block's start to its end, the body included (it is the guarded code), and ends with the block. A block
    is entered and left in order within its thread or task, so this attach and detach pair up."""
    call.enter_block()
    error: BaseException | None = None
    try:
        return (yield from gen)
    except GeneratorExit:
        raise  # the block was abandoned, not failed
    except BaseException as exc:
        error = exc
        raise
    finally:
        call.exit_block()
        end(call, error)


async def run_coroutine(
    start: Start, fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any], end: EndCall
) -> T:
    """Await ``fn(*args, **kwargs)`` with the call current. The call starts when awaited, not when the coroutine was
    made, so that the awaiting task's context is its parent."""
    call = start()
    if call is None:
        return await fn(*args, **kwargs)
    token = call.activate()
    try:
        result = await fn(*args, **kwargs)
    except BaseException as exc:
        _deactivate_and_end(call, token, end, exc)
        raise
    _deactivate_and_end(call, token, end, None)
    return result


def continue_generator(call: BreakerCall, gen: Generator[Any, Any, T], end: EndCall) -> Generator[Any, Any, T]:
    """`run_generator` for a call already started (the library admitted it when the generator was made). A
    generator dropped without ever being started still ends its call."""
    traced = run_generator(lambda: call, gen, end)
    weakref.finalize(traced, _end_unconsumed, call, end)
    return traced


def _end_unconsumed(call: BreakerCall, end: EndCall) -> None:
    if not call._ended:
        end(call, None)


def run_generator(start: Start, gen: Generator[Any, Any, T], end: EndCall) -> Generator[Any, Any, T]:
    """Drive `gen` for its consumer, forwarding values, exceptions and close, with the call current while `gen`
    runs (never while the consumer does). The call starts at the first step and ends when `gen` is exhausted,
    raises or is closed (a consumer that stops early is no error of the guarded code)."""
    call = start()
    if call is None:
        return (yield from gen)
    sent: Any = None
    thrown: BaseException | None = None
    while True:
        token = call.activate()
        try:
            item = gen.send(sent) if thrown is None else gen.throw(thrown)
        except StopIteration as stop:
            _deactivate_and_end(call, token, end, None)
            return stop.value  # type: ignore[no-any-return]
        except BaseException as exc:
            _deactivate_and_end(call, token, end, exc)
            raise
        BreakerCall.deactivate(token)
        try:
            sent, thrown = (yield item), None
        except GeneratorExit:
            token = call.activate()
            error: BaseException | None = None
            try:
                gen.close()
            except BaseException as exc:
                error = exc
                raise
            finally:
                _deactivate_and_end(call, token, end, error)
            raise
        except BaseException as exc:
            sent, thrown = None, exc


# The async generator's driver is `run_generator`'s twin, kept beside it: the same forwarding, awaited.
async def run_async_generator(start: Start, agen: AsyncGenerator[Any, Any], end: EndCall) -> AsyncGenerator[Any, Any]:
    """`run_generator` for an async generator (``asend``, ``athrow`` and ``aclose`` forwarded; with nothing
    recording, forwarded all the same)."""
    call = start()
    sent: Any = None
    thrown: BaseException | None = None
    while True:
        token = call.activate() if call is not None else None
        try:
            item = await (agen.asend(sent) if thrown is None else agen.athrow(thrown))
        except StopAsyncIteration:
            _deactivate_and_end(call, token, end, None)
            return
        except BaseException as exc:
            _deactivate_and_end(call, token, end, exc)
            raise
        BreakerCall.deactivate(token)
        try:
            sent, thrown = (yield item), None
        except GeneratorExit:
            token = call.activate() if call is not None else None
            error: BaseException | None = None
            try:
                await agen.aclose()
            except BaseException as exc:
                error = exc
                raise
            finally:
                _deactivate_and_end(call, token, end, error)
            raise
        except BaseException as exc:
            sent, thrown = None, exc


def _deactivate_and_end(call: BreakerCall | None, token: object, end: EndCall, error: BaseException | None) -> None:
    if call is not None:
        BreakerCall.deactivate(token)
        end(call, error)
