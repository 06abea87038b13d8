"""backoff against the contract in DESIGN.md (real SDK, in-memory exporter), in both orders: functions decorated after
instrumentation (fully traced) and before it (traced from backoff's call-time hooks, with the documented limits)."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import backoff
import backoff._async
import backoff._sync
import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from otel_resilience import semconv
from otel_resilience.core.config import SETTINGS
from otel_resilience.instrumentation.backoff import BackoffInstrumentor
from tests.conftest import Otel
from tests.support import retry_checks
from tests.support.retry_checks import RetryLibrary
from tests.support.retry_support import (
    AsyncFlaky,
    Flaky,
    Sleeps,
    by_name,
    exception_events,
    fetch_in_threads,
    operation_and_attempts,
)

ORDERS = ("after", "before")


class Harness:
    """Decorates either after instrumentation or before it (instrumentation switched off while decorating)."""

    def __init__(self, otel: Otel, order: str) -> None:
        self.otel = otel
        self.order = order
        self.instrumented = False
        if order == "after":
            self.instrument()

    def instrument(self) -> None:
        BackoffInstrumentor().instrument(**self.otel.kwargs())
        self.instrumented = True

    def uninstrument(self) -> None:
        BackoffInstrumentor().uninstrument()
        self.instrumented = False

    def bare(self) -> None:
        """Switch instrumentation off, for a run to compare with."""
        if self.instrumented:
            self.uninstrument()

    def decorate(self, decorator: Callable[[Any], Any], fn: Any) -> Any:
        if self.order == "after":
            if not self.instrumented:
                self.instrument()
            return decorator(fn)
        if self.instrumented:
            self.uninstrument()
        decorated = decorator(fn)
        self.instrument()
        return decorated


@pytest.fixture(params=ORDERS)
def harness(otel: Otel, request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(otel, request.param)
    yield h
    if h.instrumented:
        h.uninstrument()


@pytest.fixture
def after(otel: Otel) -> Iterator[Harness]:
    h = Harness(otel, "after")
    yield h
    h.uninstrument()


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    """backoff's sleeps (``time.sleep`` in ``backoff._sync``, ``asyncio.sleep`` in ``backoff._async``) record the wait
    requested and return at once."""
    recorder = Sleeps()
    monkeypatch.setattr(backoff._sync, "time", SimpleNamespace(sleep=recorder.sleep))
    monkeypatch.setattr(
        backoff._async,
        "asyncio",
        SimpleNamespace(sleep=recorder.async_sleep, iscoroutinefunction=asyncio.iscoroutinefunction),
    )
    return recorder


def constant(max_tries: int = 5, **kwargs: Any) -> Callable[[Any], Any]:
    return backoff.on_exception(backoff.constant, ConnectionError, interval=0.25, jitter=None, max_tries=max_tries, **kwargs)


def backoff_library(
    sleeps: Sleeps, decorate: Callable[[Any, Any], Any] = lambda decorator, fn: decorator(fn),
    on_backoff: Callable[[dict[str, Any]], None] | None = None,
) -> RetryLibrary:
    """backoff as the shared retry checks drive it: `constant` waits of 0.25 s (``on_exception``, or ``on_predicate``
    with its default predicate), decorated by `decorate` (a `Harness` decides the order)."""

    def retry(fn: Any, attempts: int) -> Any:
        return decorate(constant(max_tries=attempts, **({"on_backoff": on_backoff} if on_backoff else {})), fn)

    def retry_none(fn: Any, attempts: int) -> Any:
        return decorate(backoff.on_predicate(backoff.constant, interval=0.25, jitter=None, max_tries=attempts), fn)

    return RetryLibrary(BackoffInstrumentor, "otel_resilience.backoff", sleeps, retry, retry_none)


@pytest.fixture
def library(harness: Harness, sleeps: Sleeps) -> RetryLibrary:
    return backoff_library(sleeps, harness.decorate)


# --- on_exception ------------------------------------------------------------------------------------------------


def test_fails_twice_then_succeeds(harness: Harness, library: RetryLibrary) -> None:
    retry_checks.fails_twice_then_succeeds(harness.otel, library)
    assert library.sleeps.waits == [0.25, 0.25]


def test_max_tries_exhausted_raises_the_same_exception(harness: Harness, library: RetryLibrary) -> None:
    retry_checks.exhausted_raises_the_last_exception(harness.otel, library)
    assert library.sleeps.waits == [0.25, 0.25]


class Clock:
    """backoff's clock (``datetime.datetime.now`` in its modules), moved only by the recorded sleeps."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1)
        clock = self

        class FakeDatetime(dt.datetime):
            @classmethod
            def now(cls, tz: Any = None) -> FakeDatetime:  # type: ignore[override]
                return clock.now  # type: ignore[return-value]

        self.module = SimpleNamespace(datetime=FakeDatetime)

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def test_max_time_exhausted_and_clipped_wait(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    recorder = Sleeps(clock.advance)
    monkeypatch.setattr(backoff._sync, "datetime", clock.module)
    monkeypatch.setattr(backoff._sync, "time", SimpleNamespace(sleep=recorder.sleep))
    flaky = Flaky(10)
    fetch = harness.decorate(backoff.on_exception(backoff.expo, ConnectionError, max_time=5, jitter=None), flaky)
    with pytest.raises(ConnectionError):
        fetch()
    # tries at 0, 1, 3 and 5 s: the third wait (4 s) is clipped by backoff to what max_time leaves (2 s)
    assert recorder.waits == [1, 2, 2]
    op, attempts = operation_and_attempts(harness.otel, "Flaky")
    assert semconv.RETRY_MAX_ATTEMPTS not in op.attributes
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 4
    assert op.attributes[semconv.RETRY_TOTAL_DELAY] == 5.0
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [1.0, 2.0, 2.0, None]


@pytest.mark.parametrize("raise_on_giveup", [True, False])
def test_giveup_is_not_retried(harness: Harness, raise_on_giveup: bool) -> None:
    flaky = Flaky(10, error=PermissionError)
    fetch = harness.decorate(
        backoff.on_exception(
            backoff.constant, OSError, interval=0, max_tries=5, giveup=lambda e: isinstance(e, PermissionError),
            raise_on_giveup=raise_on_giveup,
        ),
        flaky,
    )
    if raise_on_giveup:
        with pytest.raises(PermissionError) as caught:
            fetch()
        assert caught.value is flaky.raised[0]
    else:
        assert fetch() is None
    assert flaky.calls == 1
    op, (attempt,) = operation_and_attempts(harness.otel, "Flaky")
    assert op.attributes[semconv.RETRY_RESULT] == "not_retried"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 1
    assert op.attributes[semconv.ERROR_TYPE] == "PermissionError"
    assert op.status.status_code is StatusCode.ERROR
    assert len(exception_events(op)) == (1 if raise_on_giveup else 0)  # nothing escaped when backoff returns None
    assert attempt.attributes[semconv.ERROR_TYPE] == "PermissionError"
    assert semconv.RETRY_DELAY not in attempt.attributes


def test_giveup_on_the_last_try_counts_as_exhausted(harness: Harness) -> None:
    flaky = Flaky(10)
    fetch = harness.decorate(
        backoff.on_exception(backoff.constant, ConnectionError, interval=0, max_tries=2, giveup=lambda e: e.args == ("down 2",)),
        flaky,
    )
    with pytest.raises(ConnectionError):
        fetch()
    op = harness.otel.span("retry Flaky")
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"  # backoff's own limit was reached too


def test_exception_the_decorator_does_not_catch(harness: Harness, library: RetryLibrary) -> None:
    if harness.order == "after":
        retry_checks.error_not_retried(harness.otel, library)
        return
    flaky = Flaky(1, error=ValueError)
    fetch = harness.decorate(constant(), flaky)
    with pytest.raises(ValueError) as caught:
        fetch()
    assert caught.value is flaky.raised[0]
    # documented limit: no hook of backoff's runs after an exception it does not catch
    assert harness.otel.spans() == []
    assert harness.otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS) == []


def test_uncaught_exception_after_retries(harness: Harness) -> None:
    calls = {"n": 0}

    def fetch_user() -> None:
        calls["n"] += 1
        raise (ConnectionError if calls["n"] == 1 else ValueError)("x")

    fetch = harness.decorate(constant(), fetch_user)
    with pytest.raises(ValueError):
        fetch()
    qualname = "test_uncaught_exception_after_retries.<locals>.fetch_user"
    if harness.order == "before":
        assert harness.otel.spans() == []  # nothing half-done either: the retried attempt is not left orphaned
        return
    op, attempts = operation_and_attempts(harness.otel, qualname)
    assert op.attributes[semconv.RETRY_RESULT] == "not_retried"
    assert [a.attributes[semconv.ERROR_TYPE] for a in attempts] == ["ConnectionError", "ValueError"]


# --- on_predicate ------------------------------------------------------------------------------------------------


def test_predicate_rejected_results_then_accepted(harness: Harness, library: RetryLibrary) -> None:
    retry_checks.rejected_result_is_a_failed_attempt(harness.otel, library)
    assert library.sleeps.waits == [0.25, 0.25]


def test_predicate_exhausted_returns_the_last_value(harness: Harness) -> None:
    def poll() -> str:
        return ""

    polled = harness.decorate(backoff.on_predicate(backoff.constant, interval=0, max_tries=3), poll)
    assert polled() == ""
    op, attempts = operation_and_attempts(harness.otel, "test_predicate_exhausted_returns_the_last_value.<locals>.poll")
    assert len(attempts) == 3
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert op.attributes[semconv.ERROR_TYPE] == "rejected_result"
    assert op.status.status_code is StatusCode.ERROR
    assert op.events == ()
    assert [a.attributes[semconv.ERROR_TYPE] for a in attempts] == ["rejected_result"] * 3


def test_predicate_exception_is_not_retried(harness: Harness) -> None:
    flaky = Flaky(1, error=KeyError)
    polled = harness.decorate(backoff.on_predicate(backoff.constant, interval=0, max_tries=3), flaky)
    with pytest.raises(KeyError):
        polled()
    if harness.order == "before":
        assert harness.otel.spans() == []
        return
    op = harness.otel.span("retry Flaky")
    assert op.attributes[semconv.RETRY_RESULT] == "not_retried"
    assert op.attributes[semconv.ERROR_TYPE] == "KeyError"


# --- wait generators and jitter ----------------------------------------------------------------------------------


def _finite_waits() -> Iterator[float | None]:
    yield None  # backoff primes a wait generator with one send(None) before the first wait
    yield 0.3
    yield 0.7


@pytest.mark.parametrize(
    "wait_gen,kwargs,expected",
    [
        (backoff.expo, {"factor": 0.1}, [0.1, 0.2, 0.4]),
        (backoff.fibo, {}, [1, 1, 2]),
        (backoff.constant, {"interval": 2}, [2, 2, 2]),
        (backoff.runtime, {"value": lambda r: 1.5}, [1.5, 1.5, 1.5]),
    ],
    ids=["expo", "fibo", "constant", "runtime"],
)
def test_wait_generators_record_the_wait_chosen(
    harness: Harness, sleeps: Sleeps, wait_gen: Any, kwargs: dict[str, Any], expected: list[float]
) -> None:
    fetch = harness.decorate(
        backoff.on_predicate(wait_gen, lambda r: r is None, max_tries=4, jitter=None, **kwargs)
        if wait_gen is backoff.runtime
        else backoff.on_exception(wait_gen, ConnectionError, max_tries=4, jitter=None, **kwargs),
        Flaky(3) if wait_gen is not backoff.runtime else iter([None, None, None, "x"]).__next__,
    )
    fetch()
    assert sleeps.waits == pytest.approx(expected)
    (op,) = [s for s in harness.otel.spans() if s.name.startswith("retry ")]
    attempts = sorted((s for s in harness.otel.spans() if s is not op), key=lambda s: s.attributes[semconv.RETRY_ATTEMPT])
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [*sleeps.waits, None]
    assert op.attributes[semconv.RETRY_TOTAL_DELAY] == pytest.approx(sum(expected))


def test_custom_wait_generator_running_out_is_exhausted(harness: Harness, sleeps: Sleeps) -> None:
    flaky = Flaky(10)
    fetch = harness.decorate(
        backoff.on_exception(_finite_waits, ConnectionError, jitter=None, raise_on_giveup=False), flaky
    )
    with pytest.raises(ConnectionError) as caught:  # backoff raises when its generator runs out, whatever raise_on_giveup
        fetch()
    assert caught.value is flaky.raised[-1]
    assert sleeps.waits == [0.3, 0.7]
    op, attempts = operation_and_attempts(harness.otel, "Flaky")
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 3
    assert op.attributes[semconv.ERROR_TYPE] == "ConnectionError"
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [0.3, 0.7, None]


def test_jittered_waits_recorded_are_the_waits_slept(harness: Harness, sleeps: Sleeps) -> None:
    fetch = harness.decorate(
        backoff.on_exception(backoff.expo, ConnectionError, max_tries=4, jitter=backoff.full_jitter), Flaky(10)
    )
    with pytest.raises(ConnectionError):
        fetch()
    op, attempts = operation_and_attempts(harness.otel, "Flaky")
    assert len(sleeps.waits) == 3
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [*sleeps.waits, None]
    assert op.attributes[semconv.RETRY_TOTAL_DELAY] == pytest.approx(sum(sleeps.waits))


def test_callable_max_tries_is_read_at_call_time(harness: Harness) -> None:
    limit = {"n": 2}
    flaky = Flaky(10)
    fetch = harness.decorate(constant(max_tries=lambda: limit["n"]), flaky)
    with pytest.raises(ConnectionError):
        fetch()
    limit["n"] = 3
    with pytest.raises(ConnectionError):
        fetch()
    ops = by_name(harness.otel, "retry Flaky")
    assert [op.attributes[semconv.RETRY_MAX_ATTEMPTS] for op in ops] == [2, 3]
    assert [op.attributes[semconv.RETRY_ATTEMPTS] for op in ops] == [2, 3]
    assert [op.attributes[semconv.RETRY_RESULT] for op in ops] == ["exhausted", "exhausted"]


# --- the app's handlers --------------------------------------------------------------------------------------------


def _handler_log(log: list[tuple[Any, ...]], kind: str) -> Callable[[dict[str, Any]], None]:
    def handler(details: dict[str, Any]) -> None:
        log.append((kind, details["target"], details["tries"], details.get("wait"), details.get("value"),
                    details.get("exception"), details["args"], details["kwargs"], sorted(details)))

    return handler


def _run_with_handlers(decorate: Callable[[Any, Any], Any], flaky: Flaky) -> list[tuple[Any, ...]]:
    log: list[tuple[Any, ...]] = []
    fetch = decorate(
        backoff.on_exception(
            backoff.constant, ConnectionError, interval=0.1, jitter=None, max_tries=3,
            on_success=[_handler_log(log, "success"), _handler_log(log, "success2")],
            on_backoff=_handler_log(log, "backoff"),
            on_giveup=_handler_log(log, "giveup"),
        ),
        flaky,
    )
    try:
        fetch(1, key="v")
    except ConnectionError:
        pass
    return log


@pytest.mark.parametrize("failures", [1, 5])
def test_handlers_run_as_without_instrumentation(harness: Harness, failures: int) -> None:
    harness.bare()
    bare_flaky = Flaky(failures)
    bare = _run_with_handlers(lambda d, f: d(f), bare_flaky)
    traced_flaky = Flaky(failures)
    traced = _run_with_handlers(harness.decorate, traced_flaky)
    strip = lambda log: [(e[0], e[2], e[3], e[4], e[5] is None, e[6], e[7], e[8]) for e in log]  # noqa: E731
    assert strip(traced) == strip(bare)  # same handlers, same order, same details
    assert [e[0] for e in traced][:2] == (["backoff", "success"] if failures == 1 else ["backoff", "backoff"])
    for log, flaky in ((traced, traced_flaky), (bare, bare_flaky)):
        assert all(entry[1] is flaky for entry in log)  # details["target"] is the app's function, not a stand-in
        assert all(e[5] is flaky.raised[e[2] - 1] for e in log if e[5] is not None)  # the very exception objects
    assert len(harness.otel.spans()) == 1 + min(failures + 1, 3)


def test_default_log_handlers_still_log(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    flaky = Flaky(5)

    def fetch_user() -> None:
        flaky()

    fetch = harness.decorate(backoff.on_exception(backoff.constant, ConnectionError, interval=0, jitter=None, max_tries=2), fetch_user)
    with caplog.at_level("INFO", logger="backoff"), pytest.raises(ConnectionError):
        fetch()
    assert [r.getMessage() for r in caplog.records] == [
        "Backing off fetch_user(...) for 0.0s (ConnectionError: down 1)",
        "Giving up fetch_user(...) after 2 tries (ConnectionError: down 2)",
    ]


def test_a_raising_on_backoff_handler_aborts(harness: Harness) -> None:
    def handler(details: dict[str, Any]) -> None:
        raise RuntimeError("handler bug")

    fetch = harness.decorate(constant(on_backoff=handler), Flaky(5))
    with pytest.raises(RuntimeError):
        fetch()
    op, (attempt,) = operation_and_attempts(harness.otel, "Flaky")
    assert op.attributes[semconv.RETRY_RESULT] == "aborted"
    assert op.attributes[semconv.ERROR_TYPE] == "RuntimeError"
    assert attempt.attributes[semconv.ERROR_TYPE] == "ConnectionError"


# --- async -------------------------------------------------------------------------------------------------------


async def test_async_on_exception(harness: Harness, sleeps: Sleeps) -> None:
    flaky = AsyncFlaky(2, "async")
    seen: list[int] = []

    async def on_backoff(details: dict[str, Any]) -> None:
        seen.append(details["tries"])

    async def fetch_user() -> str:
        return await flaky()

    fetch = harness.decorate(constant(on_backoff=on_backoff), fetch_user)
    assert asyncio.iscoroutinefunction(fetch)
    assert await fetch() == "async"
    assert flaky.calls == 3 and seen == [1, 2] and sleeps.waits == [0.25, 0.25]
    op, attempts = operation_and_attempts(harness.otel, "test_async_on_exception.<locals>.fetch_user")
    assert op.attributes[semconv.RETRY_RESULT] == "success"
    assert [a.attributes.get(semconv.ERROR_TYPE) for a in attempts] == ["ConnectionError", "ConnectionError", None]
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [0.25, 0.25, None]


async def test_async_exhausted_and_giveup(harness: Harness) -> None:
    flaky = AsyncFlaky(10)

    async def fetch_user() -> None:
        await flaky()

    async def giveup(exc: Exception) -> bool:
        return str(exc) == "down 2"

    fetch = harness.decorate(constant(giveup=giveup), fetch_user)
    with pytest.raises(ConnectionError) as caught:
        await fetch()
    assert caught.value is flaky.raised[1]
    op = harness.otel.span("retry test_async_exhausted_and_giveup.<locals>.fetch_user")
    assert op.attributes[semconv.RETRY_RESULT] == "not_retried"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2


async def test_async_on_predicate(harness: Harness) -> None:
    results = iter([0, 0, 7])

    async def poll() -> int:
        return next(results)

    polled = harness.decorate(backoff.on_predicate(backoff.fibo, max_tries=2, jitter=None), poll)
    assert await polled() == 0
    op, attempts = operation_and_attempts(harness.otel, "test_async_on_predicate.<locals>.poll")
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [1.0, None]
    assert [a.attributes[semconv.ERROR_TYPE] for a in attempts] == ["rejected_result", "rejected_result"]


async def test_async_cancellation_aborts(after: Harness, sleeps: Sleeps) -> None:
    await retry_checks.cancellation_aborts(after.otel, backoff_library(sleeps, after.decorate))


async def test_concurrent_tasks_do_not_mix(harness: Harness) -> None:
    async def fetch_user(failures: int) -> int:
        await asyncio.sleep(0)
        counts[failures] = counts.get(failures, 0) + 1
        if counts[failures] <= failures:
            raise ConnectionError("down")
        return failures

    counts: dict[int, int] = {}
    fetch = harness.decorate(constant(), fetch_user)
    assert await asyncio.gather(*(fetch(n) for n in range(4))) == [0, 1, 2, 3]
    ops = by_name(harness.otel, "retry test_concurrent_tasks_do_not_mix.<locals>.fetch_user")
    assert sorted(op.attributes[semconv.RETRY_ATTEMPTS] for op in ops) == [1, 2, 3, 4]
    attempts = by_name(harness.otel, "test_concurrent_tasks_do_not_mix.<locals>.fetch_user")
    for op in ops:
        mine = [a for a in attempts if a.parent.span_id == op.context.span_id]
        assert sorted(a.attributes[semconv.RETRY_ATTEMPT] for a in mine) == list(range(1, op.attributes[semconv.RETRY_ATTEMPTS] + 1))


def test_threads_do_not_mix(harness: Harness) -> None:
    results, qualname = fetch_in_threads(lambda fetch_user: harness.decorate(constant(), fetch_user))
    assert results == {0: 0, 1: 1, 2: 2, 3: 3}
    ops = by_name(harness.otel, f"retry {qualname}")
    assert sorted(op.attributes[semconv.RETRY_ATTEMPTS] for op in ops) == [1, 2, 3, 4]
    for op in ops:
        mine = [a for a in by_name(harness.otel, qualname) if a.parent.span_id == op.context.span_id]
        assert len(mine) == op.attributes[semconv.RETRY_ATTEMPTS]


# --- context: parents, children, nesting -------------------------------------------------------------------------


def test_operation_is_child_of_the_callers_span(harness: Harness) -> None:
    fetch = harness.decorate(constant(), Flaky(0))
    tracer = harness.otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handler") as handler:
        fetch()
    op = harness.otel.span("retry Flaky")
    assert op.parent is not None and op.parent.span_id == handler.get_span_context().span_id


def test_spans_made_inside_an_attempt(harness: Harness) -> None:
    tracer = harness.otel.tracer_provider.get_tracer("app")

    def query() -> str:
        with tracer.start_as_current_span("db.query"):
            return "row"

    fetch = harness.decorate(constant(), query)
    with tracer.start_as_current_span("handler") as handler:
        assert fetch() == "row"
    attempt = harness.otel.span("test_spans_made_inside_an_attempt.<locals>.query")
    db = harness.otel.span("db.query")
    expected_parent = attempt.context.span_id if harness.order == "after" else handler.get_span_context().span_id
    assert db.parent is not None and db.parent.span_id == expected_parent  # before: documented limit
    assert not trace.get_current_span().get_span_context().is_valid  # nothing left attached


def test_nested_retries_record_depth(after: Harness, sleeps: Sleeps) -> None:
    retry_checks.nested_retries_record_depth(after.otel, backoff_library(sleeps, after.decorate))


def test_backoff_inside_tenacity_records_depth(after: Harness) -> None:
    import tenacity

    from otel_resilience.instrumentation.tenacity import TenacityInstrumentor

    TenacityInstrumentor().instrument(**after.otel.kwargs())
    try:
        calls = Flaky(100)

        def inner() -> None:
            calls()

        retried_inner = after.decorate(constant(max_tries=3), inner)

        @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none(), reraise=True)
        def outer() -> None:
            retried_inner()

        with pytest.raises(ConnectionError):
            outer()
    finally:
        TenacityInstrumentor().uninstrument()
    assert calls.calls == 9
    prefix = "test_backoff_inside_tenacity_records_depth.<locals>"
    points = {
        (p.attributes[semconv.RETRY_NAME].rsplit(".", 1)[-1], p.attributes[semconv.RETRY_DEPTH]): (p.count, p.sum)
        for p in after.otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS)
    }
    assert points == {("outer", 1): (1, 3), ("inner", 2): (3, 9)}
    outer_attempts = {s.context.span_id for s in by_name(after.otel, f"{prefix}.outer")}
    inner_ops = by_name(after.otel, f"retry {prefix}.inner")
    assert {op.parent.span_id for op in inner_ops} == outer_attempts and len(inner_ops) == 3


def test_keyboard_interrupt_aborts(after: Harness) -> None:
    def interrupted() -> None:
        raise KeyboardInterrupt

    fetch = after.decorate(constant(), interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch()
    op = after.otel.span("retry test_keyboard_interrupt_aborts.<locals>.interrupted")
    assert op.attributes[semconv.RETRY_RESULT] == "aborted"
    assert op.attributes[semconv.ERROR_TYPE] == "KeyboardInterrupt"


# --- settings, safety, lifecycle ---------------------------------------------------------------------------------


def test_attempt_spans_none_mode_uses_events(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SETTINGS, "attempt_spans", "none")
    fetch = harness.decorate(constant(), Flaky(1))
    fetch()
    (op,) = harness.otel.spans()
    assert [dict(e.attributes) for e in op.events if e.name == semconv.RETRY_ATTEMPT_EVENT] == [
        {semconv.RETRY_ATTEMPT: 1, semconv.ERROR_TYPE: "ConnectionError", "exception.type": "ConnectionError",
         "exception.message": "down 1", semconv.RETRY_DELAY: 0.25},
        {semconv.RETRY_ATTEMPT: 2},
    ]


def test_internal_error_is_swallowed(
    harness: Harness, sleeps: Sleeps, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from otel_resilience.core.retry import RetryOperation

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug in otel_resilience")

    monkeypatch.setattr(RetryOperation, "attempt_started", broken)
    monkeypatch.setattr(RetryOperation, "attempt_ended", broken)
    flaky = Flaky(2, "v")
    fetch = harness.decorate(constant(), flaky)
    with caplog.at_level("WARNING", logger="otel_resilience"):
        assert fetch() == "v"
    assert flaky.calls == 3 and sleeps.waits == [0.25, 0.25]
    assert any("internal error" in r.getMessage() for r in caplog.records)


def test_uninstrument_restores_originals(otel: Otel, sleeps: Sleeps) -> None:
    names = ("retry_exception", "retry_predicate", "_init_wait_gen", "_next_wait", "_call_handlers")
    targets: list[Any] = []
    library = backoff_library(sleeps, on_backoff=lambda d: targets.append(d["target"]))
    patched = [(m, n) for m in (backoff._sync, backoff._async) for n in names]
    decorated, fresh = retry_checks.uninstrument_restores_originals(otel, library, patched)
    # backoff's own closure after uninstrument(): its handlers see the app's function, never a stand-in
    assert targets == [decorated, decorated, fresh]


def test_reinstrumenting_traces_functions_decorated_under_the_earlier_instrumentation(otel: Otel) -> None:
    BackoffInstrumentor().instrument(**otel.kwargs())
    fetch = constant()(Flaky(1))
    BackoffInstrumentor().uninstrument()
    BackoffInstrumentor().instrument(**otel.kwargs())
    try:
        fetch()
    finally:
        BackoffInstrumentor().uninstrument()
    assert otel.span("retry Flaky").attributes[semconv.RETRY_ATTEMPTS] == 2


def test_no_sdk_records_nothing_and_changes_nothing(sleeps: Sleeps) -> None:
    # The global providers are the API's defaults here (no SDK configured in this process).
    hooks = {n: vars(backoff._sync)[n] for n in ("_init_wait_gen", "_next_wait", "_call_handlers")}
    targets: list[Any] = []
    library = backoff_library(sleeps, on_backoff=lambda d: targets.append(d["target"]))

    def hooks_untouched() -> None:  # call-time hooks only once something records
        assert {n: vars(backoff._sync)[n] for n in hooks} == hooks

    flaky = retry_checks.no_sdk_records_nothing_and_changes_nothing(library, hooks_untouched)
    assert sleeps.waits == [0.25, 0.25] and targets == [flaky, flaky]


SCENARIOS = {
    "success_first": (0, {}),
    "recovers": (2, {}),
    "exhausted": (9, {}),
    "exhausted_no_raise": (9, {"raise_on_giveup": False}),
    "giveup": (9, {"giveup": lambda e: str(e) == "down 2"}),
    "uncaught": (1, {"error": ValueError}),
}


def _run_scenario(decorate: Callable[[Any, Any], Any], failures: int, options: dict[str, Any], sleeps: Sleeps) -> tuple[Any, ...]:
    options = dict(options)
    flaky = Flaky(failures, "v", error=options.pop("error", ConnectionError))
    rng = random.Random(7)  # the SDK draws ids from the global random: the jitter gets its own
    log: list[tuple[str, int]] = []
    fetch = decorate(
        backoff.on_exception(
            backoff.expo, ConnectionError, max_tries=4, jitter=lambda v: rng.uniform(0, v),
            on_backoff=lambda d: log.append(("backoff", d["tries"])), on_giveup=lambda d: log.append(("giveup", d["tries"])),
            on_success=lambda d: log.append(("success", d["tries"])), **options,
        ),
        flaky,
    )
    sleeps.waits.clear()
    try:
        outcome: Any = fetch()
    except BaseException as exc:  # noqa: BLE001 - comparing what escapes
        outcome = ("raised", type(exc), flaky.raised.index(exc))
    return outcome, list(sleeps.waits), flaky.calls, log


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_behaviour_identical_with_and_without(harness: Harness, sleeps: Sleeps, scenario: str) -> None:
    failures, options = SCENARIOS[scenario]
    harness.bare()
    bare = _run_scenario(lambda d, f: d(f), failures, options, sleeps)
    traced = _run_scenario(harness.decorate, failures, options, sleeps)
    assert traced == bare
    if harness.order == "before" and scenario == "uncaught":
        assert harness.otel.spans() == []
    else:
        assert len(by_name(harness.otel, "retry Flaky")) == 1


async def _run_async_scenario(decorate: Callable[[Any, Any], Any], failures: int, sleeps: Sleeps) -> tuple[Any, ...]:
    flaky = AsyncFlaky(failures, "v")
    log: list[tuple[str, int]] = []

    async def on_backoff(details: dict[str, Any]) -> None:
        log.append(("backoff", details["tries"]))

    fetch = decorate(constant(max_tries=3, on_backoff=on_backoff, on_giveup=lambda d: log.append(("giveup", d["tries"]))), flaky)
    sleeps.waits.clear()
    try:
        outcome: Any = await fetch()
    except BaseException as exc:  # noqa: BLE001 - comparing what escapes
        outcome = ("raised", flaky.raised.index(exc))
    return outcome, list(sleeps.waits), flaky.calls, log


@pytest.mark.parametrize("failures", [0, 2, 5])
async def test_async_behaviour_identical_with_and_without(harness: Harness, sleeps: Sleeps, failures: int) -> None:
    harness.bare()
    bare = await _run_async_scenario(lambda d, f: d(f), failures, sleeps)
    traced = await _run_async_scenario(harness.decorate, failures, sleeps)
    assert traced == bare
    assert len(by_name(harness.otel, "retry AsyncFlaky")) == 1
