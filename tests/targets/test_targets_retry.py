"""An app's own retry helpers named in configuration: every form, against the contract in DESIGN.md (real SDK,
in-memory exporter, the core's clock driven by the app's fake sleeps so measured delays are exact)."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from otel_resilience import semconv
from otel_resilience.targets import instrument_targets, uninstrument_targets
from otel_resilience.targets.retry import AttemptProxy
from tests.support._targets_support import EXAMPLES, AppModules, Clock, Flaky, Instrument, apps, by_name, clock, targets, use_clock
from tests.conftest import Otel

__all__ = ["apps", "clock", "targets"]  # fixtures

NAME = f"{__name__}.fetcher.<locals>.fetch"
QUALNAME = "fetcher.<locals>.fetch"


def fetcher(flaky: Flaky) -> Callable[..., Any]:
    """The app's operation, a plain function (so its name is readable in the assertions)."""

    def fetch(*args: Any, **kwargs: Any) -> Any:
        return flaky(*args, **kwargs)

    return fetch


def async_fetcher(flaky: Flaky, tracer: trace.Tracer | None = None) -> Callable[..., Any]:
    async def fetch(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        if tracer is not None:
            with tracer.start_as_current_span("inside"):
                return flaky(*args, **kwargs)
        return flaky(*args, **kwargs)

    return fetch


def operation_and_attempts(otel: Otel, qualname: str = QUALNAME) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The one operation span named after `qualname`, and its attempt spans in order, parentage checked."""
    op = otel.span(f"retry {qualname}")
    attempts = sorted(by_name(otel, qualname), key=lambda s: s.attributes[semconv.RETRY_ATTEMPT])
    assert op.kind is SpanKind.INTERNAL
    for attempt in attempts:
        assert attempt.parent is not None and attempt.parent.span_id == op.context.span_id
        assert attempt.kind is SpanKind.INTERNAL
    return op, attempts


def failed(name: str, number: int, delay: float | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {semconv.RETRY_NAME: name, semconv.RETRY_ATTEMPT: number, semconv.ERROR_TYPE: "ConnectionError"}
    if delay is not None:
        attributes[semconv.RETRY_DELAY] = delay
    return attributes


def operation(name: str, attempts: int, result: str, total_delay: float, error_type: str | None = None) -> dict[str, Any]:
    """The expected attributes of an operation span (depth 1)."""
    attributes: dict[str, Any] = {
        semconv.RETRY_NAME: name,
        semconv.RETRY_DEPTH: 1,
        semconv.RETRY_ATTEMPTS: attempts,
        semconv.RETRY_RESULT: result,
        semconv.RETRY_TOTAL_DELAY: pytest.approx(total_delay),
    }
    if error_type is not None:
        attributes[semconv.ERROR_TYPE] = error_type
    return attributes


def succeeded(name: str, number: int) -> dict[str, Any]:
    return {semconv.RETRY_NAME: name, semconv.RETRY_ATTEMPT: number}


def assert_exception_events(attempts: list[ReadableSpan], failures: int) -> None:
    for number, attempt in enumerate(attempts[:failures], start=1):
        (event,) = attempt.events
        assert event.name == "exception"
        assert dict(event.attributes) == {"exception.type": "ConnectionError", "exception.message": f"down {number}"}
        assert attempt.status.status_code is StatusCode.ERROR
    for attempt in attempts[failures:]:
        assert attempt.events == () and attempt.status.status_code is StatusCode.UNSET


@pytest.fixture
def example_net(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> ModuleType:
    """The untouched example module `examples/myapp/net.py`, its `time.sleep` pointed at the fake clock."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    module = importlib.import_module("myapp.net")
    monkeypatch.setattr(module.time, "sleep", clock.sleep)
    return module


# --- the call style -------------------------------------------------------------------------------------------------


def test_example_retrier_fails_twice_then_succeeds(otel: Otel, targets: Instrument, example_net: ModuleType) -> None:
    targets(retry=["myapp.net:Retrier.execute"])
    flaky = Flaky(2, "user")
    assert example_net.Retrier(max_retries=3, delay=0.1).execute(fetcher(flaky), 42) == "user"
    assert flaky.calls == 3

    op, attempts = operation_and_attempts(otel)
    assert dict(op.attributes) == operation(NAME, 3, "success", 0.3)
    assert isinstance(op.attributes[semconv.RETRY_TOTAL_DELAY], float)
    assert op.status.status_code is StatusCode.UNSET and op.events == ()
    # retry.delay is measured: the gap between one attempt's end and the next one's start (the helper's sleeps)
    assert [dict(a.attributes) for a in attempts] == [failed(NAME, 1, 0.1), failed(NAME, 2, 0.2), succeeded(NAME, 3)]
    assert all(type(a.attributes[semconv.RETRY_ATTEMPT]) is int for a in attempts)
    assert_exception_events(attempts, 2)
    # each attempt span ends when its attempt ended, not when the next began
    assert attempts[1].start_time - attempts[0].end_time == 100_000_000
    assert attempts[2].start_time - attempts[1].end_time == 200_000_000
    assert op.start_time <= attempts[0].start_time and attempts[2].end_time <= op.end_time

    (attempts_point,) = otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS)
    assert dict(attempts_point.attributes) == {semconv.RETRY_NAME: NAME, semconv.RETRY_RESULT: "success", semconv.RETRY_DEPTH: 1}
    assert attempts_point.count == 1 and attempts_point.sum == 3
    (duration,) = otel.metric_points(semconv.METRIC_RETRY_DURATION)
    assert dict(duration.attributes) == {semconv.RETRY_NAME: NAME, semconv.RETRY_RESULT: "success"}
    assert duration.count == 1 and duration.sum == pytest.approx(0.3)


def test_example_retrier_exhausted(otel: Otel, targets: Instrument, example_net: ModuleType) -> None:
    targets(retry=["myapp.net:Retrier.execute"])
    flaky = Flaky(10)
    with pytest.raises(ConnectionError) as raised:
        example_net.Retrier(max_retries=2, delay=0.1).execute(fetcher(flaky))
    assert raised.value is flaky.raised[-1]
    assert flaky.calls == 3

    op, attempts = operation_and_attempts(otel)
    assert dict(op.attributes) == operation(NAME, 3, "exhausted", 0.3, "ConnectionError")
    assert op.status.status_code is StatusCode.ERROR
    (event,) = op.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ConnectionError"
    assert event.attributes["exception.message"] == "down 3"
    assert "Traceback" in event.attributes["exception.stacktrace"]  # the final failure records its stacktrace, once
    assert [dict(a.attributes) for a in attempts] == [failed(NAME, 1, 0.1), failed(NAME, 2, 0.2), failed(NAME, 3, None)]
    assert_exception_events(attempts, 3)
    (point,) = otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS)
    assert dict(point.attributes)[semconv.RETRY_RESULT] == "exhausted" and point.sum == 3


@pytest.mark.parametrize("imported_first", [True, False], ids=["imported-before", "imported-after"])
def test_both_import_orders(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock, imported_first: bool) -> None:
    name = apps.fresh()
    if imported_first:
        importlib.import_module(name)
    targets(retry=[f"{name}:Retrier.execute"])
    if not imported_first:
        assert name not in sys.modules  # instrumenting did not import the app
    app = use_clock(importlib.import_module(name), clock)
    assert vars(app.Retrier)["execute"].__wrapped__ is not None  # patched (by the hook, when imported after)
    flaky = Flaky(1)
    assert app.Retrier(max_retries=2, delay=0.5).execute(fetcher(flaky)) == "ok"
    op, attempts = operation_and_attempts(otel)
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2 and op.attributes[semconv.RETRY_RESULT] == "success"
    assert [dict(a.attributes) for a in attempts] == [failed(NAME, 1, 0.5), succeeded(NAME, 2)]


FORMS: dict[str, Callable[[ModuleType, Callable[..., Any]], Any]] = {
    "Retrier.execute": lambda app, fn: app.Retrier(2, 0.1).execute(fn, 1, key="k"),
    "Retrier.static_execute": lambda app, fn: app.Retrier.static_execute(fn, 1, key="k"),
    "Retrier.class_execute": lambda app, fn: app.Retrier.class_execute(fn, 1, key="k"),
    "retry_call": lambda app, fn: app.retry_call(fn, 1, key="k"),
}


@pytest.mark.parametrize("form", FORMS)
def test_functions_and_methods(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock, form: str) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:{form}"])
    received: list[tuple[Any, ...]] = []
    flaky = Flaky(1)

    def fetch(*args: Any, **kwargs: Any) -> Any:
        received.append((args, kwargs))
        return flaky()

    assert FORMS[form](app, fetch) == "ok"
    assert received == [((1,), {"key": "k"})] * 2  # the helper's arguments reach the operation unchanged
    name = f"{__name__}.test_functions_and_methods.<locals>.fetch"
    op, attempts = operation_and_attempts(otel, "test_functions_and_methods.<locals>.fetch")
    assert op.attributes[semconv.RETRY_NAME] == name
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2 and op.attributes[semconv.RETRY_RESULT] == "success"
    assert [dict(a.attributes) for a in attempts] == [failed(name, 1, 0.1), succeeded(name, 2)]


def test_instance_method_called_through_the_class(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:Retrier.execute"])
    retrier = app.Retrier(1, 0.1)
    assert app.Retrier.execute(retrier, fetcher(Flaky(1))) == "ok"
    op, attempts = operation_and_attempts(otel)
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2 and len(attempts) == 2


def test_callable_passed_by_keyword(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:retry_call"])
    assert app.retry_call(fn=fetcher(Flaky(1))) == "ok"
    op, _ = operation_and_attempts(otel)
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2


def test_argname_names_the_attempted_callable(otel: Otel, targets: Instrument, apps: AppModules) -> None:
    """``run_with_policy(should_retry, operation)``: the first callable is the policy; `:operation` says which is
    attempted, positionally or by keyword."""
    app = apps.imported()
    targets(retry=[f"{app.__name__}:run_with_policy:operation"])
    policy_calls: list[BaseException] = []

    def should_retry(exc: BaseException) -> bool:
        policy_calls.append(exc)
        return True

    assert app.run_with_policy(should_retry, fetcher(Flaky(1))) == "ok"
    assert app.run_with_policy(should_retry=should_retry, operation=fetcher(Flaky(2))) == "ok"
    assert len(policy_calls) == 3
    ops = by_name(otel, f"retry {QUALNAME}")
    assert [op.attributes[semconv.RETRY_ATTEMPTS] for op in ops] == [2, 3]
    assert by_name(otel, "retry test_argname_names_the_attempted_callable.<locals>.should_retry") == []


def test_fallback_returned_after_failures_is_exhausted(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:fallback_call"])
    assert app.fallback_call(fetcher(Flaky(5)), "cached") == "cached"
    op, attempts = operation_and_attempts(otel)
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert op.attributes[semconv.ERROR_TYPE] == "ConnectionError"  # the last attempt's: nothing escaped
    assert op.status.status_code is StatusCode.ERROR and op.events == ()
    assert len(attempts) == 2


def test_base_exception_aborts(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    class Stop(BaseException):
        pass

    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:retry_call"])
    flaky = Flaky(1, error=ConnectionError)
    stop = Stop("interrupted")

    def fetch() -> Any:
        if flaky.calls:
            raise stop
        return flaky()

    with pytest.raises(Stop) as raised:
        app.retry_call(fetch)
    assert raised.value is stop
    op, attempts = operation_and_attempts(otel, "test_base_exception_aborts.<locals>.fetch")
    stop_type = f"{__name__}.test_base_exception_aborts.<locals>.Stop"
    assert op.attributes[semconv.RETRY_RESULT] == "aborted"
    assert op.attributes[semconv.ERROR_TYPE] == stop_type
    assert [a.attributes.get(semconv.ERROR_TYPE) for a in attempts] == ["ConnectionError", stop_type]


def test_nested_retry_is_one_level_deeper(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:Retrier.execute", f"{app.__name__}:retry_call"])
    inner = Flaky(1)

    def outer() -> Any:
        return app.retry_call(fetcher(inner))

    assert app.Retrier(1, 0.1).execute(outer) == "ok"
    outer_op = otel.span("retry test_nested_retry_is_one_level_deeper.<locals>.outer")
    (outer_attempt,) = by_name(otel, "test_nested_retry_is_one_level_deeper.<locals>.outer")
    inner_op, inner_attempts = operation_and_attempts(otel)
    assert outer_op.attributes[semconv.RETRY_DEPTH] == 1
    assert inner_op.attributes[semconv.RETRY_DEPTH] == 2
    assert inner_op.parent is not None and inner_op.parent.span_id == outer_attempt.context.span_id
    assert len(inner_attempts) == 2
    depths = sorted(dict(p.attributes)[semconv.RETRY_DEPTH] for p in otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS))
    assert depths == [1, 2]


def test_attempts_run_in_another_thread(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:threaded_retry_call"])
    tracer = otel.tracer_provider.get_tracer("app")
    worker_threads: set[int] = set()
    flaky = Flaky(1)

    def fetch() -> Any:
        worker_threads.add(threading.get_ident())
        with tracer.start_as_current_span("inside"):
            return flaky()

    assert app.threaded_retry_call(fetch) == "ok"
    assert threading.get_ident() not in worker_threads
    op, attempts = operation_and_attempts(otel, "test_attempts_run_in_another_thread.<locals>.fetch")
    assert len(attempts) == 2
    insides = by_name(otel, "inside")
    assert [s.parent.span_id for s in insides] == [a.context.span_id for a in attempts]  # type: ignore[union-attr]


def test_attempt_span_is_current_while_the_attempt_runs(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:retry_call"])
    tracer = otel.tracer_provider.get_tracer("app")
    flaky = Flaky(1)

    def fetch() -> Any:
        with tracer.start_as_current_span("inside"):
            return flaky()

    with tracer.start_as_current_span("request") as request:
        app.retry_call(fetch)
    op, attempts = operation_and_attempts(otel, "test_attempt_span_is_current_while_the_attempt_runs.<locals>.fetch")
    assert op.parent is not None and op.parent.span_id == request.get_span_context().span_id
    insides = by_name(otel, "inside")
    assert [s.parent.span_id for s in insides] == [a.context.span_id for a in attempts]  # type: ignore[union-attr]
    assert trace.get_current_span() is trace.INVALID_SPAN  # everything detached


def test_the_helper_receives_a_faithful_stand_in(otel: Otel, targets: Instrument, apps: AppModules) -> None:
    app = apps.imported()
    targets(retry=[f"{app.__name__}:call_once"])
    fetch = fetcher(Flaky(0))
    assert app.call_once(fetch) == "ok"
    (received,) = app.RECEIVED
    assert isinstance(received, AttemptProxy) and received.__wrapped__ is fetch
    assert received.__name__ == "fetch" and received.__qualname__ == QUALNAME
    assert inspect.signature(received) == inspect.signature(fetch)


def test_nothing_recording_hands_the_helper_the_callable_itself(apps: AppModules) -> None:
    app = apps.imported()
    instrument_targets(
        [f"{app.__name__}:call_once"],
        tracer_provider=trace.NoOpTracerProvider(),
        meter_provider=metrics.NoOpMeterProvider(),
    )
    try:
        fetch = fetcher(Flaky(0))
        assert app.call_once(fetch) == "ok"
        assert app.RECEIVED == [fetch] and app.RECEIVED[0] is fetch
    finally:
        uninstrument_targets()


# --- async ----------------------------------------------------------------------------------------------------------


async def test_async_helper_and_coroutine_function(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:Retrier.execute_async"])
    assert inspect.iscoroutinefunction(app.Retrier.execute_async)
    tracer = otel.tracer_provider.get_tracer("app")
    flaky = Flaky(2, "async")
    name = f"{__name__}.async_fetcher.<locals>.fetch"
    assert await app.Retrier(3, 0.25).execute_async(async_fetcher(flaky, tracer), 7) == "async"

    op, attempts = operation_and_attempts(otel, "async_fetcher.<locals>.fetch")
    assert op.attributes[semconv.RETRY_NAME] == name and op.attributes[semconv.RETRY_RESULT] == "success"
    assert [dict(a.attributes) for a in attempts] == [failed(name, 1, 0.25), failed(name, 2, 0.5), succeeded(name, 3)]
    assert_exception_events(attempts, 2)
    insides = by_name(otel, "inside")  # made inside each awaited attempt: children of its attempt span
    assert [s.parent.span_id for s in insides] == [a.context.span_id for a in attempts]  # type: ignore[union-attr]


async def test_async_helper_with_a_lambda_returning_a_coroutine(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:Retrier.execute_async"])
    tracer = otel.tracer_provider.get_tracer("app")
    flaky = Flaky(1)
    fetch = async_fetcher(flaky, tracer)
    assert await app.Retrier(1, 0.1).execute_async(lambda: fetch()) == "ok"
    op, attempts = operation_and_attempts(otel, "test_async_helper_with_a_lambda_returning_a_coroutine.<locals>.<lambda>")
    assert [a.attributes.get(semconv.ERROR_TYPE) for a in attempts] == ["ConnectionError", None]
    assert attempts[0].attributes[semconv.RETRY_DELAY] == 0.1  # the attempt lasted until its coroutine was done
    insides = by_name(otel, "inside")
    assert [s.parent.span_id for s in insides] == [a.context.span_id for a in attempts]  # type: ignore[union-attr]


async def test_async_exhausted_raises_the_same_exception(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:Retrier.execute_async"])
    flaky = Flaky(9)
    with pytest.raises(ConnectionError) as raised:
        await app.Retrier(1, 0.1).execute_async(async_fetcher(flaky))
    assert raised.value is flaky.raised[-1] and flaky.calls == 2
    op, _ = operation_and_attempts(otel, "async_fetcher.<locals>.fetch")
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"


async def test_cancelled_async_operation_is_aborted(otel: Otel, targets: Instrument, apps: AppModules) -> None:
    app = apps.imported()
    targets(retry=[f"{app.__name__}:Retrier.execute_async"])
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(app.Retrier(1, 0.1).execute_async(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    op, attempts = operation_and_attempts(otel, "test_cancelled_async_operation_is_aborted.<locals>.hang")
    assert op.attributes[semconv.RETRY_RESULT] == "aborted"
    assert op.attributes[semconv.ERROR_TYPE] == "asyncio.exceptions.CancelledError"
    assert len(attempts) == 1


# --- the decorator style --------------------------------------------------------------------------------------------


def test_bare_decorator(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:retry[decorator]"])
    flaky = Flaky(2)

    @app.retry
    def load(key: str) -> Any:
        return flaky(key)

    assert load.__name__ == "load" and load.__wrapped__ is not None
    assert load("k") == "ok"
    name = f"{__name__}.test_bare_decorator.<locals>.load"
    op, attempts = operation_and_attempts(otel, "test_bare_decorator.<locals>.load")
    assert dict(op.attributes) == operation(name, 3, "success", 0.3)
    assert [dict(a.attributes) for a in attempts] == [failed(name, 1, 0.1), failed(name, 2, 0.2), succeeded(name, 3)]
    load("again")  # every call is its own operation
    assert len(by_name(otel, "retry test_bare_decorator.<locals>.load")) == 2


def test_decorator_with_arguments_is_traced_once(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    """``@retry(times=2)`` goes through ``functools.partial(retry, ...)``, which calls the patched helper again:
    still one operation per call."""
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:retry[decorator]"])
    flaky = Flaky(5)

    @app.retry(times=2, delay=0.2)
    def load() -> Any:
        return flaky()

    with pytest.raises(ConnectionError) as raised:
        load()
    assert raised.value is flaky.raised[-1] and flaky.calls == 2
    op, attempts = operation_and_attempts(otel, "test_decorator_with_arguments_is_traced_once.<locals>.load")
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted" and op.attributes[semconv.RETRY_ATTEMPTS] == 2
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [0.2, None]
    assert len(otel.spans()) == 3


@pytest.mark.parametrize("target", ["with_retries[decorator]", "with_retries:func[decorator]"])
def test_decorator_factory(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock, target: str) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:{target}"])
    flaky = Flaky(1)

    @app.with_retries(2, 0.1, ConnectionError)  # a class among the factory's arguments is not the decorated function
    def load() -> Any:
        return flaky()

    assert load() == "ok"
    op, attempts = operation_and_attempts(otel, "test_decorator_factory.<locals>.load")
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2 and len(attempts) == 2


async def test_async_decorated_function(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:retry[decorator]"])
    flaky = Flaky(1)

    @app.retry(times=3, delay=0.1)
    async def load() -> Any:
        await asyncio.sleep(0)
        return flaky()

    assert inspect.iscoroutinefunction(load)
    assert await load() == "ok"
    op, attempts = operation_and_attempts(otel, "test_async_decorated_function.<locals>.load")
    assert op.attributes[semconv.RETRY_RESULT] == "success"
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [0.1, None]


def test_decorated_method(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:retry[decorator]"])

    class Repository:
        def __init__(self) -> None:
            self.flaky = Flaky(1)

        @app.retry
        def get(self, key: str) -> Any:
            return (self, self.flaky(key))

    repository = Repository()
    assert repository.get("k") == (repository, "ok")
    op, attempts = operation_and_attempts(otel, "test_decorated_method.<locals>.Repository.get")
    assert op.attributes[semconv.RETRY_NAME] == f"{__name__}.test_decorated_method.<locals>.Repository.get"
    assert len(attempts) == 2


def test_concurrent_calls_of_one_decorated_function(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:retry[decorator]"])
    failed_once: set[int] = set()
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    @app.retry(times=3, delay=0)
    def load() -> str:
        ident = threading.get_ident()
        with lock:
            first = ident not in failed_once
            failed_once.add(ident)
        if first:
            barrier.wait()  # every thread is inside its first attempt at once
            raise ConnectionError("first")
        return "ok"

    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(load())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["ok"] * 8
    ops = by_name(otel, "retry test_concurrent_calls_of_one_decorated_function.<locals>.load")
    attempts = by_name(otel, "test_concurrent_calls_of_one_decorated_function.<locals>.load")
    assert len(ops) == 8 and len(attempts) == 16
    for op in ops:
        mine = [a for a in attempts if a.parent is not None and a.parent.span_id == op.context.span_id]
        assert [a.attributes[semconv.RETRY_ATTEMPT] for a in sorted(mine, key=lambda a: a.start_time)] == [1, 2]
        assert op.attributes[semconv.RETRY_ATTEMPTS] == 2


def test_decorated_before_instrumentation_is_not_captured(otel: Otel, apps: AppModules, clock: Clock) -> None:
    """The decorator ran before it was patched, so its wrapper holds the plain function: nothing to see. The same
    goes for functions the helper's own module decorates while it is imported (``Client.get``)."""
    app = use_clock(apps.imported(), clock)
    flaky = Flaky(1)

    @app.retry
    def early() -> Any:
        return flaky()

    instrument_targets([f"{app.__name__}:retry[decorator]"], **otel.kwargs())
    try:
        assert early() == "ok" and flaky.calls == 2
        assert app.Client(Flaky(1)).get("k") == "ok"
        assert otel.spans() == []
    finally:
        uninstrument_targets()


def test_helper_module_imported_after_instrumenting_decorates_its_own_and_later_functions(
    otel: Otel, targets: Instrument, apps: AppModules, clock: Clock
) -> None:
    name = apps.fresh()
    targets(retry=[f"{name}:retry[decorator]"])
    app = use_clock(importlib.import_module(name), clock)
    # decorated by the module's own top-level code while it was being imported: the helper was patched at its def
    assert app.Client(Flaky(1)).get("k") == "ok"
    op, attempts = operation_and_attempts(otel, "Client.get")
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2 and len(attempts) == 2
    otel.exporter.clear()

    @app.retry
    def later() -> Any:
        return "fine"

    assert later() == "fine"
    op, attempts = operation_and_attempts(otel, "test_helper_module_imported_after_instrumenting_decorates_its_own_and_later_functions.<locals>.later")
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 1 and len(attempts) == 1


# --- behaviour: identical with and without instrumentation --------------------------------------------------------


def _scenario_outcome(app: ModuleType, scenario: str) -> tuple[Any, ...]:
    """Run one scenario; report everything the app can observe."""
    flaky = Flaky({"recovers": 2, "exhausted": 9, "fallback": 9, "decorated": 1}[scenario])
    fetch = fetcher(flaky)
    try:
        if scenario == "decorated":
            value: Any = app.retry(times=2, delay=0.1)(fetch)()
        elif scenario == "fallback":
            value = app.fallback_call(fetch, "cached")
        else:
            value = app.Retrier(2, 0.1).execute(fetch)
    except ConnectionError as exc:
        return ("raised", exc is flaky.raised[-1], str(exc), flaky.calls, list(app.__dict__["_slept"]))
    return ("returned", value, flaky.calls, list(app.__dict__["_slept"]))


@pytest.mark.parametrize("scenario", ["recovers", "exhausted", "fallback", "decorated"])
def test_behaviour_identical_with_and_without(otel: Otel, apps: AppModules, scenario: str) -> None:
    def run(instrumented: bool) -> tuple[Any, ...]:
        app = apps.imported()
        app._slept = []
        app.sleep = app._slept.append
        if instrumented:
            instrument_targets(
                [f"{app.__name__}:Retrier.execute", f"{app.__name__}:fallback_call", f"{app.__name__}:retry[decorator]"],
                **otel.kwargs(),
            )
        try:
            return _scenario_outcome(app, scenario)
        finally:
            uninstrument_targets()

    without = run(False)
    assert otel.spans() == []
    assert run(True) == without
    assert len(by_name(otel, f"retry {QUALNAME}")) == 1  # the instrumented run was traced


async def test_async_behaviour_identical_with_and_without(otel: Otel, apps: AppModules) -> None:
    async def run(instrumented: bool) -> tuple[Any, ...]:
        app = apps.imported()
        slept: list[float] = []

        async def record(seconds: float) -> None:
            slept.append(seconds)

        app.async_sleep = record
        if instrumented:
            instrument_targets([f"{app.__name__}:Retrier.execute_async"], **otel.kwargs())
        flaky = Flaky(9)
        try:
            await app.Retrier(2, 0.1).execute_async(async_fetcher(flaky))
        except ConnectionError as exc:
            return (exc is flaky.raised[-1], flaky.calls, slept)
        finally:
            uninstrument_targets()
        raise AssertionError("expected ConnectionError")

    without = await run(False)
    assert without == (True, 3, [0.1, 0.2])
    assert await run(True) == without
    assert len(by_name(otel, "retry async_fetcher.<locals>.fetch")) == 1


# --- uninstrument -----------------------------------------------------------------------------------------------------


def test_uninstrument_restores_originals_exactly(otel: Otel, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    retrier = vars(app.Retrier)
    originals = {
        "execute": retrier["execute"],
        "execute_async": retrier["execute_async"],
        "static_execute": retrier["static_execute"],
        "class_execute": retrier["class_execute"],
    }
    module_originals = {"retry_call": app.retry_call, "retry": app.retry}
    instrument_targets(
        [f"{app.__name__}:Retrier.{name}" for name in originals]
        + [f"{app.__name__}:retry_call", f"{app.__name__}:retry[decorator]"],
        **otel.kwargs(),
    )
    assert all(retrier[name] is not original for name, original in originals.items())
    assert all(vars(app)[name] is not original for name, original in module_originals.items())
    assert isinstance(retrier["static_execute"], staticmethod) and isinstance(retrier["class_execute"], classmethod)

    @app.retry
    def decorated_meanwhile() -> str:
        return "ok"

    uninstrument_targets()
    assert all(retrier[name] is original for name, original in originals.items())
    assert all(vars(app)[name] is original for name, original in module_originals.items())
    # what cannot be taken back (a function decorated while instrumented) passes straight through
    assert decorated_meanwhile() == "ok"
    assert app.Retrier(1, 0.1).execute(fetcher(Flaky(1))) == "ok"
    assert otel.spans() == []


def test_uninstrument_cancels_pending_hooks(otel: Otel, apps: AppModules) -> None:
    name = apps.fresh()
    instrument_targets([f"{name}:retry_call"], **otel.kwargs())
    uninstrument_targets()
    app = importlib.import_module(name)
    assert not hasattr(app.retry_call, "__wrapped__")  # the plain function: never patched
    assert app.retry_call(fetcher(Flaky(0))) == "ok"
    assert otel.spans() == []


def test_instrument_again_after_uninstrument(otel: Otel, targets: Instrument, apps: AppModules, clock: Clock) -> None:
    app = use_clock(apps.imported(), clock)
    targets(retry=[f"{app.__name__}:retry_call"])
    uninstrument_targets()
    targets(retry=[f"{app.__name__}:retry_call"])
    targets(retry=[f"{app.__name__}:retry_call"])  # the same target again: nothing more
    assert app.retry_call(fetcher(Flaky(1))) == "ok"
    op, attempts = operation_and_attempts(otel)
    assert len(attempts) == 2
