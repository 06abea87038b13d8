"""Translate purgatory's guarded blocks and state changes into core breaker events.

A guarded block is ``SyncCircuitBreaker.__enter__``/``__exit__`` (``__aenter__``/``__aexit__``), ``__enter__`` raising
the open state being a refusal; ``Context.set_state`` is every transition; ``handle_exception`` of the closed and
half-open states counts a failure. ``get_breaker()`` returns new wrappers each time, so a breaker is keyed on its unit
of work and circuit name. purgatory raises one open-state object again and again: we keep no reference to it.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import Any, Final

from purgatory.domain.model import ClosedState, Context, HalfOpenedState, OpenedState
from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker
from purgatory.service._async.repository import AsyncInMemoryRepository
from purgatory.service._sync.circuitbreaker import SyncCircuitBreaker
from purgatory.service._sync.repository import SyncInMemoryRepository

from otel_resilience import semconv
from otel_resilience.core import Telemetry, never_raises, report_internal_error
from otel_resilience.core.breaker import (
    BreakerCall,
    any_active_call,
    counting_end,
    current_call,
    failure_hook,
    normalise_state,
    reported_transition,
)
from otel_resilience.core.bracket import await_then_end, call_then_end
from otel_resilience.core.registry import StateReader
from otel_resilience.patching import Patches

Breaker = SyncCircuitBreaker | AsyncCircuitBreaker

_IN_MEMORY: Final = (SyncInMemoryRepository, AsyncInMemoryRepository)
_FAILURE_COUNTED: Final = failure_hook(lambda _state, args: args[0])  # State.handle_exception(self, context, exc)
_end_call: Final = counting_end(  # the call's subject is the circuit's `Context`
    operator.attrgetter("failure_count"), "otel_resilience.instrumentation.purgatory._adapter: the failure count"
)


def _circuit_name(_uow: Any, circuit: str) -> str:
    return circuit


@functools.lru_cache(maxsize=1024)
def _state_reader(circuit: str) -> StateReader:
    """The gauge's reading of one circuit of a unit of work: from the in-memory repository only (one reader per
    circuit name, made once, rather than a closure per call)."""

    def read(uow: Any) -> str | None:
        repository = uow.contexts
        if type(repository) not in _IN_MEMORY:
            return None  # Redis: no reads of ours; the gauge shows the state last seen
        context = repository.breakers.get(circuit)
        return normalise_state(context.state) if context is not None else None

    return read


def _block_ended(block: tuple[BreakerCall, Any], value: Any, error: BaseException | None) -> None:
    """The block was left (`error`: what ``__exit__`` raised, else what the block raised). Never raises: `exit_block`
    and `_end_call` guard themselves (no `never_raises` layer on every call)."""
    call, raised_in_block = block
    call.exit_block()
    _end_call(call, error if error is not None else raised_in_block)


class PurgatoryAdapter:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def patch(self, patches: Patches) -> None:
        """The block entry points; deferred until something records: the exits and state hooks (they act only inside
        a call of ours, and there is none before: so with no SDK a block pays for one patched method, not two)."""
        may_record = self.telemetry.may_record  # the wrappers begin with BreakerCall.start: one context read
        patches.wrap(SyncCircuitBreaker, "__enter__", self._enter, enabled=may_record)
        patches.wrap(AsyncCircuitBreaker, "__aenter__", self._aenter, enabled=may_record)
        patches.wrap(SyncCircuitBreaker, "__exit__", self._exit, enabled=any_active_call, deferred=True)
        patches.wrap(AsyncCircuitBreaker, "__aexit__", self._aexit, enabled=any_active_call, deferred=True)
        patches.wrap(Context, "set_state", self._set_state, enabled=any_active_call, deferred=True)
        patches.wrap(ClosedState, "handle_exception", _FAILURE_COUNTED, enabled=any_active_call, deferred=True)
        patches.wrap(HalfOpenedState, "handle_exception", _FAILURE_COUNTED, enabled=any_active_call, deferred=True)

    # --- entering a block ----------------------------------------------------------------------------------------

    def _entering(self, breaker: Breaker) -> BreakerCall | None:
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            context = breaker.context
            circuit = context.name
            call = BreakerCall.start(
                self.telemetry,
                breaker.uow,
                normalise_state(context.state),
                subject=context,
                guarded=circuit,  # purgatory guards blocks, not functions: a circuit is named by its own name
                name_of=_circuit_name,
                key=circuit,
                read_state=_state_reader(circuit),
            )
            if call is not None:
                call.enter_block()  # current through the block, until __exit__
            return call
        except Exception:
            report_internal_error("otel_resilience.instrumentation.purgatory._adapter.PurgatoryAdapter._entering")
            return None

    def _entered(self, call: BreakerCall) -> None:
        try:  # guarded inline, not by a `never_raises` layer: this runs on every call
            context: Context = call.subject  # type: ignore[assignment]
            call.admitted_in(normalise_state(context.state) or semconv.STATE_CLOSED)  # half_open once the ttl passed
        except Exception:
            report_internal_error("otel_resilience.instrumentation.purgatory._adapter.PurgatoryAdapter._entered")

    @never_raises
    def _not_entered(self, call: BreakerCall, error: BaseException) -> None:
        call.exit_block()
        if isinstance(error, OpenedState):
            call.refused_in(semconv.STATE_OPEN)
        _end_call(call, error)

    def _enter(self, wrapped: Callable[..., Any], instance: SyncCircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self._entering(instance)
        if call is None:
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            self._not_entered(call, exc)
            raise
        self._entered(call)
        return result

    async def _aenter(self, wrapped: Callable[..., Any], instance: AsyncCircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = self._entering(instance)
        if call is None:
            return await wrapped(*args, **kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            self._not_entered(call, exc)
            raise
        self._entered(call)
        return result

    # --- leaving it ----------------------------------------------------------------------------------------------

    def _exit(self, wrapped: Callable[..., Any], instance: SyncCircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = current_call(instance.context)
        block = None if call is None else (call, args[1] if len(args) > 1 else kwargs.get("exc"))  # what the block raised
        return call_then_end(_block_ended, block, wrapped, args, kwargs)  # purgatory judges with the call current

    async def _aexit(self, wrapped: Callable[..., Any], instance: AsyncCircuitBreaker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = current_call(instance.context)
        block = None if call is None else (call, args[1] if len(args) > 1 else kwargs.get("exc"))
        return await await_then_end(_block_ended, block, wrapped, args, kwargs)

    # --- transitions ---------------------------------------------------------------------------------------------

    def _set_state(self, wrapped: Callable[..., Any], instance: Context, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        previous = instance.state
        result = wrapped(*args, **kwargs)
        # Outside a call of ours the change is seen at the next call, against the state last seen.
        reported_transition(self.telemetry, instance, previous, instance.state)
        return result
