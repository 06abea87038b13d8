"""An app's own circuit breaker named in configuration: full cycles, every form, metrics and the health snapshot,
against the contract in DESIGN.md (real SDK, in-memory exporter, the breakers' clocks driven by the tests)."""

from __future__ import annotations

import asyncio
import importlib
import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from otel_resilience import semconv
from otel_resilience.core import breakers
from otel_resilience.targets import instrument_targets, uninstrument_targets
from tests.support._targets_support import EXAMPLES, AppModules, Instrument, apps, targets
from tests.conftest import Otel

__all__ = ["apps", "targets"]  # fixtures

BREAKERS = "_targets_breakers.py"


class Declined(Exception):
    pass


def charge(ok: bool) -> str:
    """The guarded function of these tests: the breakers are unnamed, so they take its name."""
    if not ok:
        raise Declined("card declined")
    return "charged"


CHARGE = f"{__name__}.charge"
DECLINED = f"{__name__}.Declined"


class Monotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker_spans(otel: Otel, name: str = CHARGE) -> list[ReadableSpan]:
    spans = [s for s in otel.spans() if s.name == f"circuitbreaker {name}"]
    for span in spans:
        assert span.kind is SpanKind.INTERNAL and span.attributes[semconv.BREAKER_NAME] == name
    return spans


def summary(span: ReadableSpan) -> tuple[Any, ...]:
    """(state, result, error.type, events as (name, previous, state)) of one call span."""
    events = tuple(
        (e.name, e.attributes.get(semconv.BREAKER_PREVIOUS_STATE), e.attributes.get(semconv.BREAKER_STATE))
        if e.name == semconv.BREAKER_STATE_CHANGE_EVENT
        else (e.name, e.attributes["exception.type"])
        for e in span.events
    )
    return (
        span.attributes.get(semconv.BREAKER_STATE),
        span.attributes[semconv.BREAKER_RESULT],
        span.attributes.get(semconv.ERROR_TYPE),
        events,
    )


def counts(otel: Otel, metric: str, *keys: str, name: str | None = None) -> dict[tuple[Any, ...], int]:
    """Points of `metric` by the attributes `keys` (only breaker `name`'s, when given: the state gauge reports every
    live breaker of the process, including any a failed earlier test still holds)."""
    points = otel.metric_points(metric)
    return {
        tuple(p.attributes[k] for k in keys): p.value
        for p in points
        if name is None or p.attributes[semconv.BREAKER_NAME] == name
    }


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:
        return type(exc).__name__


def run_cycle(breaker: Any, clock: Monotonic, reset_timeout: float) -> list[Any]:
    """closed → open → rejected → half_open → closed, then → open again and a failing probe (→ open)."""
    results = [outcome(lambda: breaker.call(charge, False)) for _ in range(2)]
    results.append(outcome(lambda: breaker.call(charge, True)))
    clock.now += reset_timeout
    results.append(outcome(lambda: breaker.call(charge, True)))
    results += [outcome(lambda: breaker.call(charge, False)) for _ in range(2)]
    clock.now += reset_timeout
    results.append(outcome(lambda: breaker.call(charge, False)))
    return results


CYCLE_RESULTS = ["Declined", "Declined", "CircuitOpenError", "charged", "Declined", "Declined", "Declined"]
CYCLE_SPANS = [
    ("closed", "failure", DECLINED, (("exception", DECLINED),)),
    ("closed", "failure", DECLINED, (("circuitbreaker.state_change", "closed", "open"), ("exception", DECLINED))),
    ("open", "rejected", "myapp.cb.CircuitOpenError", (("exception", "myapp.cb.CircuitOpenError"),)),
    (
        "half_open",
        "success",
        None,
        (("circuitbreaker.state_change", "open", "half_open"), ("circuitbreaker.state_change", "half_open", "closed")),
    ),
    ("closed", "failure", DECLINED, (("exception", DECLINED),)),
    ("closed", "failure", DECLINED, (("circuitbreaker.state_change", "closed", "open"), ("exception", DECLINED))),
    (
        "half_open",
        "failure",
        DECLINED,
        (
            ("circuitbreaker.state_change", "open", "half_open"),
            ("circuitbreaker.state_change", "half_open", "open"),
            ("exception", DECLINED),
        ),
    ),
]


@pytest.fixture
def example_cb(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The untouched example module `examples/myapp/cb.py`."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("myapp.cb")


def test_example_breaker_full_cycle(otel: Otel, targets: Instrument, example_cb: ModuleType) -> None:
    targets(breaker=["myapp.cb:Breaker.call@state"])
    clock = Monotonic()
    breaker = example_cb.Breaker(failure_threshold=2, reset_timeout=30.0, clock=clock)
    assert run_cycle(breaker, clock, 30.0) == CYCLE_RESULTS

    spans = breaker_spans(otel)
    assert [summary(s) for s in spans] == CYCLE_SPANS
    assert [s.status.status_code for s in spans] == [StatusCode.ERROR] * 3 + [StatusCode.UNSET] + [StatusCode.ERROR] * 3
    assert all(type(s.attributes[semconv.BREAKER_STATE]) is str for s in spans)
    assert semconv.BREAKER_FAILURE_COUNT not in spans[0].attributes  # not readable from a hand-written breaker

    assert counts(otel, semconv.METRIC_BREAKER_CALLS, semconv.BREAKER_NAME, semconv.BREAKER_STATE, semconv.BREAKER_RESULT) == {
        (CHARGE, "closed", "failure"): 4,
        (CHARGE, "open", "rejected"): 1,
        (CHARGE, "half_open", "success"): 1,
        (CHARGE, "half_open", "failure"): 1,
    }
    assert counts(
        otel, semconv.METRIC_BREAKER_TRANSITIONS, semconv.BREAKER_NAME, semconv.BREAKER_PREVIOUS_STATE, semconv.BREAKER_STATE
    ) == {
        (CHARGE, "closed", "open"): 2,
        (CHARGE, "open", "half_open"): 2,
        (CHARGE, "half_open", "closed"): 1,
        (CHARGE, "half_open", "open"): 1,
    }
    assert counts(otel, semconv.METRIC_BREAKER_STATE, semconv.BREAKER_NAME, semconv.BREAKER_STATE, name=CHARGE) == {
        (CHARGE, "closed"): 0,
        (CHARGE, "open"): 1,
        (CHARGE, "half_open"): 0,
    }
    (health,) = [b for b in breakers() if b["name"] == CHARGE]
    assert health["library"] == "targets" and health["state"] == "open"
    assert isinstance(health["last_transition"], float)


def test_call_span_is_current_while_the_guarded_function_runs(otel: Otel, targets: Instrument, example_cb: ModuleType) -> None:
    targets(breaker=["myapp.cb:Breaker.call@state"])
    tracer = otel.tracer_provider.get_tracer("app")

    def inside() -> str:
        with tracer.start_as_current_span("inside"):
            return "ok"

    with tracer.start_as_current_span("request") as request:
        assert example_cb.Breaker().call(inside) == "ok"
    (call,) = breaker_spans(otel, f"{__name__}.test_call_span_is_current_while_the_guarded_function_runs.<locals>.inside")
    assert call.parent is not None and call.parent.span_id == request.get_span_context().span_id
    assert otel.span("inside").parent.span_id == call.context.span_id  # type: ignore[union-attr]


@pytest.mark.parametrize("imported_first", [True, False], ids=["imported-before", "imported-after"])
def test_named_breaker_with_string_states_and_fallback(otel: Otel, targets: Instrument, apps: AppModules, imported_first: bool) -> None:
    name = apps.fresh(BREAKERS)
    if imported_first:
        importlib.import_module(name)
    targets(breaker=[f"{name}:NamedBreaker.call@state", f"{name}:NamedBreaker.call_or:fn@state"])
    app = importlib.import_module(name)
    clock = Monotonic()
    breaker = app.NamedBreaker("payments", threshold=1, reset_timeout=5.0, clock=clock)
    assert outcome(lambda: breaker.call(charge, False)) == "Declined"
    assert breaker.state == "OPEN"
    fallback_calls: list[int] = []
    assert breaker.call_or(lambda: fallback_calls.append(1) or "cached", charge, True) == "cached"
    clock.now += 5.0
    assert breaker.call_or(lambda: "cached", charge, True) == "charged"
    assert fallback_calls == [1]

    spans = breaker_spans(otel, "payments")
    assert [summary(s) for s in spans] == [
        ("closed", "failure", DECLINED, (("circuitbreaker.state_change", "closed", "open"), ("exception", DECLINED))),
        ("open", "rejected", None, ()),  # refused, answered by the fallback: no exception, still an error
        (
            "half_open",
            "success",
            None,
            (("circuitbreaker.state_change", "open", "half_open"), ("circuitbreaker.state_change", "half_open", "closed")),
        ),
    ]
    assert spans[1].status.status_code is StatusCode.ERROR
    # both configured methods share the breaker's one registry entry: each transition counted once
    assert sum(counts(otel, semconv.METRIC_BREAKER_TRANSITIONS, semconv.BREAKER_STATE, semconv.BREAKER_PREVIOUS_STATE).values()) == 3


def test_state_one_object_deeper(otel: Otel, targets: Instrument, apps: AppModules) -> None:
    app = apps.imported(BREAKERS)
    targets(breaker=[f"{app.__name__}:NestedStateBreaker.call@_impl.state"])
    clock = Monotonic()
    breaker = app.NestedStateBreaker(threshold=1, reset_timeout=1.0, clock=clock)
    outcome(lambda: breaker.call(charge, False))
    assert outcome(lambda: breaker.call(charge, True)) == "CircuitOpenError"
    assert [summary(s)[:2] for s in breaker_spans(otel)] == [("closed", "failure"), ("open", "rejected")]


@pytest.mark.parametrize("method", ["call", "guard"])
def test_class_level_breaker_with_class_and_static_methods(otel: Otel, targets: Instrument, apps: AppModules, method: str) -> None:
    app = apps.imported(BREAKERS)
    targets(breaker=[f"{app.__name__}:SharedBreaker.{method}@state"])
    call = getattr(app.SharedBreaker, method)
    assert outcome(lambda: call(charge, False)) == "Declined"
    assert app.SharedBreaker.state == "Open"
    assert outcome(lambda: call(charge, True)) == "CircuitOpenError"
    assert [summary(s)[:3] for s in breaker_spans(otel)] == [
        ("closed", "failure", DECLINED),
        ("open", "rejected", f"{app.__name__}.CircuitOpenError"),
    ]


def test_module_level_breaker(otel: Otel, targets: Instrument, apps: AppModules) -> None:
    app = apps.imported(BREAKERS)
    targets(breaker=[f"{app.__name__}:guarded_call@state"])
    assert outcome(lambda: app.guarded_call(charge, False)) == "Declined"
    assert outcome(lambda: app.guarded_call(charge, True)) == "CircuitOpenError"
    spans = breaker_spans(otel)
    assert [summary(s)[:2] for s in spans] == [("closed", "failure"), ("open", "rejected")]
    assert summary(spans[0])[3][0] == ("circuitbreaker.state_change", "closed", "open")


async def test_async_breaker(otel: Otel, targets: Instrument, apps: AppModules) -> None:
    app = apps.imported(BREAKERS)
    targets(breaker=[f"{app.__name__}:AsyncBreaker.call@state"])
    clock = Monotonic()
    breaker = app.AsyncBreaker(threshold=1, reset_timeout=2.0, clock=clock)
    tracer = otel.tracer_provider.get_tracer("app")

    async def pay(ok: bool) -> str:
        await asyncio.sleep(0)
        with tracer.start_as_current_span("inside"):
            return charge(ok)

    with pytest.raises(Declined):
        await breaker.call(pay, False)
    with pytest.raises(app.CircuitOpenError):
        await breaker.call(pay, True)
    clock.now += 2.0
    assert await breaker.call(pay, True) == "charged"
    name = f"{__name__}.test_async_breaker.<locals>.pay"
    spans = breaker_spans(otel, name)
    assert [summary(s)[:2] for s in spans] == [("closed", "failure"), ("open", "rejected"), ("half_open", "success")]
    insides = [s for s in otel.spans() if s.name == "inside"]
    assert [s.parent.span_id for s in insides] == [spans[0].context.span_id, spans[2].context.span_id]  # type: ignore[union-attr]


def test_time_derived_half_open_is_shown_by_the_gauge_and_counted_by_the_probe(
    otel: Otel, targets: Instrument, apps: AppModules
) -> None:
    """A state that moves with the clock alone (open → half_open) is shown by the gauge, whose reading changes
    nothing; the probe, the first call to see it, counts the transition and carries its event."""
    app = apps.imported(BREAKERS)
    targets(breaker=[f"{app.__name__}:TimedBreaker.call@current"])
    clock = Monotonic()
    breaker = app.TimedBreaker(threshold=1, reset_timeout=3.0, clock=clock)
    breaker.name = "timed"
    outcome(lambda: breaker.call(charge, False))
    clock.now += 3.0
    assert counts(otel, semconv.METRIC_BREAKER_STATE, semconv.BREAKER_NAME, semconv.BREAKER_STATE, name="timed") == {
        ("timed", "closed"): 0,
        ("timed", "open"): 0,
        ("timed", "half_open"): 1,
    }
    transitions = (semconv.BREAKER_NAME, semconv.BREAKER_PREVIOUS_STATE, semconv.BREAKER_STATE)
    assert counts(otel, semconv.METRIC_BREAKER_TRANSITIONS, *transitions) == {("timed", "closed", "open"): 1}
    assert breaker.call(charge, True) == "charged"
    (_, probe) = breaker_spans(otel, "timed")
    assert summary(probe) == (
        "half_open",
        "success",
        None,
        (("circuitbreaker.state_change", "open", "half_open"), ("circuitbreaker.state_change", "half_open", "closed")),
    )
    assert counts(otel, semconv.METRIC_BREAKER_TRANSITIONS, *transitions) == {
        ("timed", "closed", "open"): 1,
        ("timed", "open", "half_open"): 1,
        ("timed", "half_open", "closed"): 1,
    }


def test_unreadable_state_warns_once_and_changes_nothing(otel: Otel, targets: Instrument, apps: AppModules, caplog: pytest.LogCaptureFixture) -> None:
    app = apps.imported(BREAKERS)
    targets(breaker=[f"{app.__name__}:NamedBreaker.call@missing"])
    breaker = app.NamedBreaker("payments")
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        assert breaker.call(charge, True) == "charged"
        assert outcome(lambda: breaker.call(charge, False)) == "Declined"
    warnings = [r for r in caplog.records if "missing" in r.getMessage()]
    assert len(warnings) == 1 and "cannot read the state attribute" in warnings[0].getMessage()
    spans = breaker_spans(otel, "payments")
    assert [summary(s)[:2] for s in spans] == [(None, "success"), (None, "failure")]


def test_concurrent_calls_add_up(otel: Otel, targets: Instrument, example_cb: ModuleType) -> None:
    targets(breaker=["myapp.cb:Breaker.call@state"])
    breaker = example_cb.Breaker(failure_threshold=10_000)
    barrier = threading.Barrier(16)

    def work() -> None:
        barrier.wait()
        for i in range(25):
            outcome(lambda: breaker.call(charge, i % 5 != 0))

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts(otel, semconv.METRIC_BREAKER_CALLS, semconv.BREAKER_STATE, semconv.BREAKER_RESULT) == {
        ("closed", "success"): 16 * 20,
        ("closed", "failure"): 16 * 5,
    }
    assert otel.metric_points(semconv.METRIC_BREAKER_TRANSITIONS) == []


def test_behaviour_identical_with_and_without(otel: Otel, apps: AppModules) -> None:
    def run(instrumented: bool) -> tuple[Any, ...]:
        app = apps.imported(BREAKERS)
        if instrumented:
            instrument_targets(breaker_targets=[f"{app.__name__}:NamedBreaker.call@state"], **otel.kwargs())
        try:
            clock = Monotonic()
            breaker = app.NamedBreaker("b", threshold=2, reset_timeout=1.0, clock=clock)
            calls: list[bool] = []
            errors: list[BaseException] = []

            def guarded(ok: bool) -> str:
                calls.append(ok)
                if not ok:
                    errors.append(Declined("no"))
                    raise errors[-1]
                return "yes"

            seen: list[Any] = []
            for ok, advance in [(False, 0), (False, 0), (True, 0), (True, 1.0), (False, 0), (False, 0), (False, 1.0)]:
                clock.now += advance
                try:
                    seen.append(breaker.call(guarded, ok))
                except Declined as exc:
                    seen.append(("declined", exc is errors[-1]))
                except app.CircuitOpenError as exc:
                    seen.append(("open", str(exc)))
                seen.append(breaker.state)
            return tuple(seen), tuple(calls), breaker.failures
        finally:
            uninstrument_targets()

    without = run(False)
    assert otel.spans() == []
    assert run(True) == without
    assert len(breaker_spans(otel, "b")) == 7


def test_uninstrument_restores_originals_exactly(otel: Otel, apps: AppModules) -> None:
    app = apps.imported(BREAKERS)
    originals = {name: vars(app.SharedBreaker)[name] for name in ("call", "guard")}
    method = vars(app.NamedBreaker)["call"]
    function = app.guarded_call
    instrument_targets(
        breaker_targets=[
            f"{app.__name__}:SharedBreaker.call@state",
            f"{app.__name__}:SharedBreaker.guard@state",
            f"{app.__name__}:NamedBreaker.call@state",
            f"{app.__name__}:guarded_call@state",
        ],
        **otel.kwargs(),
    )
    assert vars(app.NamedBreaker)["call"] is not method and app.guarded_call is not function
    uninstrument_targets()
    assert all(vars(app.SharedBreaker)[name] is original for name, original in originals.items())
    assert vars(app.NamedBreaker)["call"] is method and vars(app)["guarded_call"] is function
    assert app.NamedBreaker("n").call(charge, True) == "charged"
    assert otel.spans() == []
