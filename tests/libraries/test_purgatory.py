"""purgatory against the contract: sync and async factories, ``with``/``async with`` and the decorators in both
import orders, exact spans, events and metrics through full cycles, with purgatory's clock (``time.time`` as seen by
``purgatory.domain.model``) under the test's control."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Callable
from typing import Any

import pytest
from purgatory import AsyncCircuitBreakerFactory, SyncCircuitBreakerFactory
from purgatory.domain import model
from purgatory.domain.model import ClosedState, Context, HalfOpenedState, OpenedState
from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker
from purgatory.service._sync.circuitbreaker import SyncCircuitBreaker

from otel_resilience import semconv
from otel_resilience.core import breakers
from otel_resilience.instrumentation.purgatory import PurgatoryInstrumentor
from tests.support.breaker_checks import (
    UNSET,
    Clock,
    assert_cycle,
    breaker_spans,
    calls,
    cycle,
    gauge,
    outcome,
    run_async_cycle,
    run_cycle,
    run_in_tasks,
    run_in_threads,
    summary,
    transitions,
)
from tests.conftest import Otel, instrumented_fixture

REFUSED = "purgatory.domain.model.OpenedState"
CYCLE = cycle(tripped="ConnectionError", refused=REFUSED)
CYCLE_FAILURE_COUNTS = [1, None, None, None, 0, 0]  # purgatory counts failures only while closed


@pytest.fixture(autouse=True)
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    gc.collect()  # factories of earlier tests leave the registry
    clock = Clock()
    monkeypatch.setattr(model, "time", clock)  # purgatory's model only calls time.time()
    return clock


instrumented = instrumented_fixture(PurgatoryInstrumentor)


def charge(fail: bool) -> str:
    if fail:
        raise ConnectionError("payments down")
    return "paid"


def past_timeout(clock: Clock) -> Callable[[], None]:
    return lambda: clock.advance(31)


def assert_payments_cycle(otel: Otel, seen: list[Any]) -> None:
    assert [type(x).__name__ for x in seen] == [
        "ConnectionError", "ConnectionError", "OpenedState", "ConnectionError", "str", "str",
    ]
    assert seen[2].circuit_name == "payments"
    assert_cycle(otel, "payments", CYCLE, CYCLE_FAILURE_COUNTS)


def test_with_block_full_cycle(instrumented: Otel, clock: Clock) -> None:
    factory = SyncCircuitBreakerFactory(default_threshold=2, default_ttl=30)

    def guarded(fail: bool) -> str:
        with factory.get_breaker("payments"):
            return charge(fail)

    assert_payments_cycle(instrumented, run_cycle(guarded, past_timeout(clock)))


@pytest.mark.parametrize("order", ["decorated_after_instrument", "decorated_before_instrument"])
def test_sync_decorator_full_cycle_in_either_order(otel: Otel, clock: Clock, order: str) -> None:
    factory = SyncCircuitBreakerFactory(default_threshold=2, default_ttl=30)
    if order == "decorated_before_instrument":
        guarded = factory("payments")(charge)
        PurgatoryInstrumentor().instrument(**otel.kwargs())
    else:
        PurgatoryInstrumentor().instrument(**otel.kwargs())
        guarded = factory("payments")(charge)
    try:
        seen = run_cycle(guarded, past_timeout(clock))
    finally:
        PurgatoryInstrumentor().uninstrument()
    assert_payments_cycle(otel, seen)


@pytest.mark.parametrize("order", ["decorated_after_instrument", "decorated_before_instrument"])
async def test_async_decorator_full_cycle_in_either_order(otel: Otel, clock: Clock, order: str) -> None:
    factory = AsyncCircuitBreakerFactory(default_threshold=2, default_ttl=30)

    async def charge_async(fail: bool) -> str:
        await asyncio.sleep(0)
        return charge(fail)

    if order == "decorated_before_instrument":
        guarded = factory("payments")(charge_async)
        PurgatoryInstrumentor().instrument(**otel.kwargs())
    else:
        PurgatoryInstrumentor().instrument(**otel.kwargs())
        guarded = factory("payments")(charge_async)
    try:
        seen = await run_async_cycle(guarded, past_timeout(clock))
    finally:
        PurgatoryInstrumentor().uninstrument()
    assert_payments_cycle(otel, seen)


async def test_async_with_block_full_cycle(instrumented: Otel, clock: Clock) -> None:
    factory = AsyncCircuitBreakerFactory(default_threshold=2, default_ttl=30)

    async def guarded(fail: bool) -> str:
        async with await factory.get_breaker("payments"):
            await asyncio.sleep(0)
            return charge(fail)

    assert_payments_cycle(instrumented, await run_async_cycle(guarded, past_timeout(clock)))


def test_span_covers_the_block_and_nests(instrumented: Otel) -> None:
    tracer = instrumented.tracer_provider.get_tracer("app")
    factory = SyncCircuitBreakerFactory()
    with tracer.start_as_current_span("request"):
        with factory.get_breaker("orders"):
            with tracer.start_as_current_span("load order"):
                pass
            with factory.get_breaker("stock"):
                with tracer.start_as_current_span("check stock"):
                    pass
        with tracer.start_as_current_span("after"):
            pass
    orders, stock = instrumented.span("circuitbreaker orders"), instrumented.span("circuitbreaker stock")
    assert orders.parent.span_id == instrumented.span("request").context.span_id
    assert instrumented.span("load order").parent.span_id == orders.context.span_id
    assert stock.parent.span_id == orders.context.span_id
    assert instrumented.span("check stock").parent.span_id == stock.context.span_id
    assert instrumented.span("after").parent.span_id == instrumented.span("request").context.span_id


def test_excluded_exception_is_ignored(instrumented: Otel) -> None:
    factory = SyncCircuitBreakerFactory(default_threshold=1)

    def validate() -> None:
        with factory.get_breaker("forms", exclude=[ValueError]):
            raise ValueError("bad input")

    assert isinstance(outcome(validate), ValueError)
    (span,) = instrumented.spans()
    assert summary(span) == ("closed", "ignored", None, UNSET, [])
    assert span.attributes[semconv.BREAKER_FAILURE_COUNT] == 0


def test_reused_open_state_exception_is_never_kept_or_formatted(instrumented: Otel, clock: Clock) -> None:
    """purgatory raises one OpenedState object for every refusal; its traceback grows with each raise."""
    factory = SyncCircuitBreakerFactory(default_threshold=1, default_ttl=30)

    def guarded() -> None:
        with factory.get_breaker("reused"):
            raise ConnectionError("down")

    outcome(guarded)
    refusals = [outcome(guarded) for _ in range(3)]
    assert refusals[0] is refusals[1] is refusals[2]
    for span in breaker_spans(instrumented, "reused")[1:]:
        (event,) = span.events
        assert set(event.attributes) == {"exception.type", "exception.message"}
        assert event.attributes["exception.message"] == "Circuit reused is open"
    ours = ("otel_resilience", "opentelemetry")
    refusal = refusals[0]
    del refusals
    gc.collect()
    holders = [r for r in gc.get_referrers(refusal) if type(r).__module__.startswith(ours)]
    assert holders == []


def test_registry_is_keyed_on_unit_of_work_and_circuit(instrumented: Otel, clock: Clock) -> None:
    first, second = SyncCircuitBreakerFactory(default_threshold=1), SyncCircuitBreakerFactory(default_threshold=1)
    for _ in range(3):
        with first.get_breaker("shared-name"):  # a new wrapper object every time: one breaker
            pass
    outcome(lambda: first(circuit="shared-name")(charge)(True))
    with second.get_breaker("shared-name"):
        pass
    snapshots = sorted(
        (b["state"], b["failure_count"]) for b in breakers() if b["name"] == "shared-name"
    )
    assert snapshots == [("closed", 0), ("open", None)]  # two factories, two breakers; open: no count exposed
    del first, second
    gc.collect()
    assert [b for b in breakers() if b["name"] == "shared-name"] == []


def test_gauge_reads_the_state_purgatory_resolved(instrumented: Otel, clock: Clock) -> None:
    """purgatory moves an open circuit to half-opened only when a request comes: past its ttl it is still open."""
    factory = SyncCircuitBreakerFactory(default_threshold=1, default_ttl=30)
    outcome(factory("ttl")(charge), True)
    clock.advance(3600)
    assert gauge(instrumented, "ttl") == {"closed": 0, "open": 1, "half_open": 0}
    assert transitions(instrumented, "ttl") == {("closed", "open"): 1}
    assert outcome(factory("ttl")(charge), False) == "paid"
    assert summary(breaker_spans(instrumented, "ttl")[-1]) == (
        "half_open", "success", None, UNSET, [("open", "half_open"), ("half_open", "closed")],
    )


def test_threads_count_exactly(instrumented: Otel) -> None:
    factory = SyncCircuitBreakerFactory(default_threshold=10**6)
    run_in_threads(instrumented, "busy", lambda i: factory("busy")(charge)(i % 5 == 0))
    assert calls(instrumented, "busy") == {("closed", "success"): 640, ("closed", "failure"): 160}


async def test_tasks_count_exactly(instrumented: Otel) -> None:
    await run_in_tasks(instrumented, "tasks", AsyncCircuitBreakerFactory(default_threshold=10**6)("tasks"))


PATCHED = [
    (SyncCircuitBreaker, "__enter__"), (SyncCircuitBreaker, "__exit__"), (AsyncCircuitBreaker, "__aenter__"),
    (AsyncCircuitBreaker, "__aexit__"), (Context, "set_state"), (ClosedState, "handle_exception"),
    (HalfOpenedState, "handle_exception"),
]


def test_uninstrument_restores_originals(otel: Otel, clock: Clock) -> None:
    before = {(owner, name): vars(owner)[name] for owner, name in PATCHED}
    PurgatoryInstrumentor().instrument(**otel.kwargs())
    assert all(vars(owner)[name] is not before[(owner, name)] for owner, name in PATCHED)
    PurgatoryInstrumentor().uninstrument()
    assert all(vars(owner)[name] is before[(owner, name)] for owner, name in PATCHED)
    run_cycle(SyncCircuitBreakerFactory(default_threshold=2, default_ttl=30)("after")(charge), past_timeout(clock))
    assert otel.spans() == []


def _scenario(clock: Clock) -> list[Any]:
    factory = SyncCircuitBreakerFactory(default_threshold=2, default_ttl=30)
    raised = ConnectionError("the same object")

    def fail() -> None:
        with factory.get_breaker("same"):
            raise raised

    def ignored() -> None:
        with factory.get_breaker("same", exclude=[KeyError]):
            raise KeyError("k")

    seen: list[Any] = [outcome(fail), outcome(ignored), outcome(fail), outcome(fail), outcome(fail)]
    clock.advance(31)
    seen.append(outcome(factory("same")(charge), False))
    context = factory.get_breaker("same").context
    return [(type(x).__name__, str(x)) for x in seen] + [seen[0] is raised, context.state, context.failure_count]


def test_behaviour_identical_with_and_without(otel: Otel, clock: Clock) -> None:
    bare = _scenario(clock)
    PurgatoryInstrumentor().instrument(**otel.kwargs())
    try:
        traced = _scenario(clock)
    finally:
        PurgatoryInstrumentor().uninstrument()
    assert traced == bare
    assert bare[-3:] == [True, "closed", 0]
    assert len(otel.spans()) == 6


def test_refusal_traceback_grows_by_no_more_than_bare(otel: Otel, clock: Clock) -> None:
    """The reused exception's traceback grows with every raise (purgatory's own behaviour); our patch adds exactly
    two entries per refusal (the patched ``__enter__`` and the adapter's wrapper), and never reads or formats it."""

    def growth() -> int:
        factory = SyncCircuitBreakerFactory(default_threshold=1, default_ttl=30)

        def guarded() -> None:
            with factory.get_breaker("tb"):
                raise ConnectionError("down")

        outcome(guarded)
        first = outcome(guarded)
        depth = _tb_depth(first)
        outcome(guarded)
        return _tb_depth(first) - depth

    bare = growth()
    PurgatoryInstrumentor().instrument(**otel.kwargs())
    try:
        traced = growth()
    finally:
        PurgatoryInstrumentor().uninstrument()
    assert traced == bare + 2


def _tb_depth(exc: BaseException) -> int:
    depth, tb = 0, exc.__traceback__
    while tb is not None:
        depth, tb = depth + 1, tb.tb_next
    return depth


def test_no_sdk_records_nothing_and_adds_no_inner_hooks(clock: Clock) -> None:
    inner = [(Context, "set_state"), (SyncCircuitBreaker, "__exit__"), (AsyncCircuitBreaker, "__aexit__")]
    before = [vars(owner)[name] for owner, name in inner]
    PurgatoryInstrumentor().instrument()
    try:
        guarded = SyncCircuitBreakerFactory(default_threshold=2, default_ttl=30)("nosdk")(charge)
        seen = run_cycle(guarded, past_timeout(clock))
        assert [type(x).__name__ for x in seen][:3] == ["ConnectionError", "ConnectionError", "OpenedState"]
        assert [vars(owner)[name] for owner, name in inner] == before  # one patched method per block, no more
        assert [b for b in breakers() if b["name"] == "nosdk"] == []
    finally:
        PurgatoryInstrumentor().uninstrument()


def test_states_map_to_the_contract() -> None:
    from otel_resilience.core.breaker import normalise_state

    assert [normalise_state(s) for s in (model.CLOSED, model.OPENED, model.HALF_OPENED)] == [
        "closed", "open", "half_open",
    ]
    assert sys.modules["purgatory.domain.model"] is model and OpenedState.name == "opened"
