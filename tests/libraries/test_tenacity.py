"""tenacity, every form users write, against the contract in DESIGN.md (real SDK, in-memory exporter)."""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any

import pytest
import tenacity
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from otel_resilience import semconv
from otel_resilience.core.config import SETTINGS
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from tests.conftest import Otel, instrumented_fixture
from tests.support import retry_checks
from tests.support.retry_checks import RetryLibrary
from tests.support.retry_support import Flaky, Sleeps, by_name, operation_and_attempts

NO_WAIT = tenacity.wait_none()


instrumented = instrumented_fixture(TenacityInstrumentor)


@pytest.fixture
def library() -> RetryLibrary:
    """tenacity as the shared retry checks drive it: ``@tenacity.retry`` with a fixed wait, its sleeps recorded."""
    sleeps = Sleeps()

    def retry(fn: Any, attempts: int) -> Any:
        return tenacity.retry(
            retry=tenacity.retry_if_exception_type(ConnectionError), stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_fixed(0.001), sleep=sleeps.sleep, reraise=True,
        )(fn)

    def retry_none(fn: Any, attempts: int) -> Any:
        return tenacity.retry(
            retry=tenacity.retry_if_result(lambda r: r is None), stop=tenacity.stop_after_attempt(attempts),
            wait=tenacity.wait_fixed(0.001), sleep=sleeps.sleep,
        )(fn)

    return RetryLibrary(TenacityInstrumentor, "otel_resilience.tenacity", sleeps, retry, retry_none)


def fetch_user_factory(flaky: Flaky) -> Any:
    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(0.001))
    def fetch_user() -> Any:
        return flaky()

    return fetch_user


def test_decorated_function_fails_twice_then_succeeds(instrumented: Otel, library: RetryLibrary) -> None:
    retry_checks.fails_twice_then_succeeds(instrumented, library)
    assert library.sleeps.waits == [0.001, 0.001]


def test_exhausted_raises_the_same_retry_error(instrumented: Otel) -> None:
    @tenacity.retry(stop=tenacity.stop_after_attempt(2), wait=NO_WAIT)
    def always_down() -> None:
        raise ConnectionError("refused")

    with pytest.raises(tenacity.RetryError) as caught:
        always_down()
    op, attempts = operation_and_attempts(instrumented, "test_exhausted_raises_the_same_retry_error.<locals>.always_down")
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2
    assert op.attributes[semconv.ERROR_TYPE] == "tenacity.RetryError"
    assert op.status.status_code is StatusCode.ERROR
    (event,) = op.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "tenacity.RetryError"
    assert "Traceback" in event.attributes["exception.stacktrace"]  # the final failure has the stacktrace, once
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [0.0, None]
    for attempt in attempts:
        assert "exception.stacktrace" not in attempt.events[0].attributes
    assert caught.value.last_attempt.exception().args == ("refused",)


def test_reraise_gives_the_same_exception_object(instrumented: Otel, library: RetryLibrary) -> None:
    retry_checks.exhausted_raises_the_last_exception(instrumented, library)


def test_error_not_retried(instrumented: Otel, library: RetryLibrary) -> None:
    retry_checks.error_not_retried(instrumented, library)


def test_rejected_result_is_a_failed_attempt(instrumented: Otel, library: RetryLibrary) -> None:
    retry_checks.rejected_result_is_a_failed_attempt(instrumented, library)


def test_rejected_result_exhausted(instrumented: Otel) -> None:
    @tenacity.retry(retry=tenacity.retry_if_result(lambda r: r is None), stop=tenacity.stop_after_attempt(2), wait=NO_WAIT)
    def poll() -> None:
        return None

    with pytest.raises(tenacity.RetryError):
        poll()
    op = instrumented.span("retry test_rejected_result_exhausted.<locals>.poll")
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert op.attributes[semconv.ERROR_TYPE] == "tenacity.RetryError"


def test_fallback_from_retry_error_callback_is_still_exhausted(instrumented: Otel) -> None:
    @tenacity.retry(stop=tenacity.stop_after_attempt(2), wait=NO_WAIT, retry_error_callback=lambda state: "fallback")
    def down() -> str:
        raise ConnectionError("refused")

    assert down() == "fallback"
    op = instrumented.span("retry test_fallback_from_retry_error_callback_is_still_exhausted.<locals>.down")
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert op.attributes[semconv.ERROR_TYPE] == "ConnectionError"  # the last attempt's: nothing escaped
    assert op.status.status_code is StatusCode.ERROR
    assert op.events == ()  # no exception escaped, so no stacktrace to record


def test_stop_after_delay_has_no_max_attempts(instrumented: Otel) -> None:
    clock = iter(range(100))
    flaky = Flaky(10)
    retrying = tenacity.Retrying(stop=tenacity.stop_after_delay(2.5), wait=NO_WAIT)
    # tenacity measures with time.monotonic through RetryCallState; drive it with a fake clock we own
    import tenacity as t

    original = t.time.monotonic
    t.time.monotonic = lambda: float(next(clock))  # type: ignore[assignment]
    try:
        with pytest.raises(tenacity.RetryError):
            retrying(flaky)
    finally:
        t.time.monotonic = original  # type: ignore[assignment]
    op = instrumented.span("retry Flaky")
    assert semconv.RETRY_MAX_ATTEMPTS not in op.attributes
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == flaky.calls


def test_combined_stop_states_its_attempt_limit(instrumented: Otel) -> None:
    retrying = tenacity.Retrying(stop=tenacity.stop_after_delay(60) | tenacity.stop_after_attempt(4), wait=NO_WAIT)
    assert retrying(Flaky(0)) == "ok"
    assert instrumented.span("retry Flaky").attributes[semconv.RETRY_MAX_ATTEMPTS] == 4


def test_retrying_called_directly_names_the_callable(instrumented: Otel) -> None:
    def load() -> int:
        return 7

    assert tenacity.Retrying(stop=tenacity.stop_after_attempt(2))(load) == 7
    op, (attempt,) = operation_and_attempts(instrumented, "test_retrying_called_directly_names_the_callable.<locals>.load")
    assert op.attributes[semconv.RETRY_NAME] == f"{__name__}.test_retrying_called_directly_names_the_callable.<locals>.load"


class Repository:
    def __init__(self) -> None:
        self.flaky = Flaky(1, "row")

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=NO_WAIT)
    def get(self, key: str) -> str:
        return f"{self.flaky()}:{key}"


def test_method_decorated_before_instrumentation(instrumented: Otel) -> None:
    # Repository.get was decorated at import time, long before instrument(): it is traced all the same.
    assert Repository().get("k") == "row:k"
    op, attempts = operation_and_attempts(instrumented, "Repository.get")
    assert op.attributes[semconv.RETRY_NAME] == f"{__name__}.Repository.get"
    assert len(attempts) == 2


def test_iterator_form_takes_the_enclosing_function_name(instrumented: Otel) -> None:
    flaky = Flaky(1)
    inside: list[int] = []
    for attempt in tenacity.Retrying(stop=tenacity.stop_after_attempt(3), wait=NO_WAIT):
        with attempt:
            inside.append(trace.get_current_span().get_span_context().span_id)
            flaky()
    qualname = "test_iterator_form_takes_the_enclosing_function_name"
    op, attempts = operation_and_attempts(instrumented, qualname)
    assert op.attributes[semconv.RETRY_NAME] == f"{__name__}.{qualname}"
    assert op.attributes[semconv.RETRY_RESULT] == "success"
    assert [a.attributes.get(semconv.ERROR_TYPE) for a in attempts] == ["ConnectionError", None]
    # the attempt span is current inside `with attempt:`, and only there
    assert inside == [a.context.span_id for a in attempts]
    assert not trace.get_current_span().get_span_context().is_valid


def test_iterator_form_exhausted(instrumented: Otel) -> None:
    with pytest.raises(tenacity.RetryError):
        for attempt in tenacity.Retrying(stop=tenacity.stop_after_attempt(2), wait=NO_WAIT):
            with attempt:
                raise ConnectionError("nope")
    op = instrumented.span("retry test_iterator_form_exhausted")
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2


def _first_success_returned_from_inside() -> str:
    for attempt in tenacity.Retrying(stop=tenacity.stop_after_attempt(3), wait=NO_WAIT):
        with attempt:
            return "early"
    return "never"


def test_iterator_form_left_by_return_after_success(instrumented: Otel) -> None:
    assert _first_success_returned_from_inside() == "early"
    op, (attempt,) = operation_and_attempts(instrumented, "_first_success_returned_from_inside")
    assert op.attributes[semconv.RETRY_RESULT] == "success"
    assert attempt.status.status_code is StatusCode.UNSET
    assert not trace.get_current_span().get_span_context().is_valid


def test_iterator_form_abandoned_after_failure_is_aborted(instrumented: Otel) -> None:
    for attempt in tenacity.Retrying(stop=tenacity.stop_after_attempt(3), wait=NO_WAIT):
        with attempt:
            raise ConnectionError("first")
        break
    op = instrumented.span("retry test_iterator_form_abandoned_after_failure_is_aborted")
    assert op.attributes[semconv.RETRY_RESULT] == "aborted"
    assert op.attributes[semconv.ERROR_TYPE] == "ConnectionError"
    assert op.status.status_code is StatusCode.ERROR


def test_keyboard_interrupt_aborts(instrumented: Otel) -> None:
    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=NO_WAIT)
    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    op = instrumented.span("retry test_keyboard_interrupt_aborts.<locals>.interrupted")
    assert op.attributes[semconv.RETRY_RESULT] == "aborted"
    assert op.attributes[semconv.ERROR_TYPE] == "KeyboardInterrupt"


def test_explicit_try_again(instrumented: Otel) -> None:
    calls = []

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=NO_WAIT)
    def again() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise tenacity.TryAgain
        return "done"

    assert again() == "done"
    op, attempts = operation_and_attempts(instrumented, "test_explicit_try_again.<locals>.again")
    assert attempts[0].attributes[semconv.ERROR_TYPE] == "tenacity.TryAgain"
    assert op.attributes[semconv.RETRY_RESULT] == "success"


def test_operation_is_child_of_the_callers_span(instrumented: Otel) -> None:
    tracer = instrumented.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("handler") as handler:
        fetch_user_factory(Flaky(0))()
    op = instrumented.span("retry fetch_user_factory.<locals>.fetch_user")
    assert op.parent is not None and op.parent.span_id == handler.get_span_context().span_id


def test_spans_made_inside_an_attempt_are_its_children(instrumented: Otel) -> None:
    tracer = instrumented.tracer_provider.get_tracer("app")

    @tenacity.retry(stop=tenacity.stop_after_attempt(2), wait=NO_WAIT)
    def query() -> None:
        with tracer.start_as_current_span("db.query"):
            pass

    query()
    attempt = instrumented.span("test_spans_made_inside_an_attempt_are_its_children.<locals>.query")
    db = instrumented.span("db.query")
    assert db.parent is not None and db.parent.span_id == attempt.context.span_id
    assert not trace.get_current_span().get_span_context().is_valid  # nothing left attached


def test_nested_retries_record_depth(instrumented: Otel, library: RetryLibrary) -> None:
    retry_checks.nested_retries_record_depth(instrumented, library)


async def test_async_decorated(instrumented: Otel) -> None:
    flaky = Flaky(1, "async")

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=NO_WAIT)
    async def fetch() -> str:
        await asyncio.sleep(0)
        return flaky()

    assert await fetch() == "async"
    op, attempts = operation_and_attempts(instrumented, "test_async_decorated.<locals>.fetch")
    assert op.attributes[semconv.RETRY_RESULT] == "success"
    assert [a.attributes.get(semconv.ERROR_TYPE) for a in attempts] == ["ConnectionError", None]


async def test_async_iterator_form(instrumented: Otel) -> None:
    flaky = Flaky(2)
    seen: list[int] = []
    async for attempt in tenacity.AsyncRetrying(stop=tenacity.stop_after_attempt(5), wait=NO_WAIT):
        with attempt:
            seen.append(trace.get_current_span().get_span_context().span_id)
            flaky()
    op, attempts = operation_and_attempts(instrumented, "test_async_iterator_form")
    assert op.attributes[semconv.RETRY_RESULT] == "success"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 3
    assert seen == [a.context.span_id for a in attempts]


async def test_async_iterator_form_releases_its_run_when_it_ends(instrumented: Otel) -> None:
    """tenacity's async state and its loop refer to each other, so the state outlives the loop until the garbage
    collector runs: once the operation has ended, our run (its spans, its contexts) must not live as long."""
    from otel_resilience.instrumentation.tenacity._adapter import _BY_STATE

    retrying = tenacity.AsyncRetrying(stop=tenacity.stop_after_attempt(5), wait=NO_WAIT)
    async for attempt in retrying:
        with attempt:
            Flaky(0)()
    assert operation_and_attempts(instrumented, "test_async_iterator_form_releases_its_run_when_it_ends")[0]
    assert weakref.ref(retrying._retry_state) not in _BY_STATE


async def test_async_cancellation_aborts(instrumented: Otel, library: RetryLibrary) -> None:
    await retry_checks.cancellation_aborts(instrumented, library)


async def test_concurrent_tasks_do_not_mix(instrumented: Otel) -> None:
    shared = tenacity.AsyncRetrying(stop=tenacity.stop_after_attempt(3), wait=NO_WAIT)
    tracer = instrumented.tracer_provider.get_tracer("app")

    async def job(i: int) -> int:
        flaky = Flaky(i % 3)

        async def work() -> int:
            await asyncio.sleep(0)
            flaky()
            return i

        with tracer.start_as_current_span(f"job {i}"):
            return await shared.copy()(work)

    assert await asyncio.gather(*(job(i) for i in range(20))) == list(range(20))
    ops = [s for s in instrumented.spans() if s.name.startswith("retry ")]
    assert len(ops) == 20
    jobs = {s.name: s for s in instrumented.spans() if s.name.startswith("job ")}
    for op in ops:
        parent_job = next(j for j in jobs.values() if j.context.span_id == op.parent.span_id)
        i = int(parent_job.name.split()[1])
        assert op.attributes[semconv.RETRY_ATTEMPTS] == i % 3 + 1


def test_threads_share_one_retrying_object(instrumented: Otel) -> None:
    shared = tenacity.Retrying(stop=tenacity.stop_after_attempt(3), wait=NO_WAIT)
    results: dict[int, Any] = {}

    def worker(i: int) -> None:
        flaky = Flaky(i % 3, i)
        for attempt in shared:
            with attempt:
                results[i] = flaky()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: i for i in range(16)}
    ops = [s for s in instrumented.spans() if s.name == "retry test_threads_share_one_retrying_object.<locals>.worker"]
    assert sorted(op.attributes[semconv.RETRY_ATTEMPTS] for op in ops) == sorted(i % 3 + 1 for i in range(16))
    attempts = [s for s in instrumented.spans() if s.name == "test_threads_share_one_retrying_object.<locals>.worker"]
    assert len(attempts) == sum(i % 3 + 1 for i in range(16))
    op_ids = {op.context.span_id for op in ops}
    assert all(a.parent.span_id in op_ids for a in attempts)


def test_attempt_spans_on_retry_mode(instrumented: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SETTINGS, "attempt_spans", "on_retry")
    fetch_user_factory(Flaky(0))()
    assert by_name(instrumented, "fetch_user_factory.<locals>.fetch_user") == []  # first attempt succeeded
    instrumented.exporter.clear()
    fetch_user_factory(Flaky(1))()
    op, attempts = operation_and_attempts(instrumented, "fetch_user_factory.<locals>.fetch_user")
    assert [a.attributes[semconv.RETRY_ATTEMPT] for a in attempts] == [1, 2]
    assert attempts[0].attributes[semconv.ERROR_TYPE] == "ConnectionError"
    assert op.start_time <= attempts[0].start_time < attempts[0].end_time <= attempts[1].start_time


def test_attempt_spans_none_mode_uses_events(instrumented: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SETTINGS, "attempt_spans", "none")
    fetch_user_factory(Flaky(1))()
    assert by_name(instrumented, "fetch_user_factory.<locals>.fetch_user") == []
    op = instrumented.span("retry fetch_user_factory.<locals>.fetch_user")
    assert [dict(e.attributes) for e in op.events] == [
        {semconv.RETRY_ATTEMPT: 1, semconv.ERROR_TYPE: "ConnectionError", "exception.type": "ConnectionError",
         "exception.message": "down 1", semconv.RETRY_DELAY: 0.001},
        {semconv.RETRY_ATTEMPT: 2},
    ]


def test_stacktraces_all_and_none(instrumented: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    @tenacity.retry(stop=tenacity.stop_after_attempt(2), wait=NO_WAIT, reraise=True)
    def down() -> None:
        raise ConnectionError("x")

    monkeypatch.setattr(SETTINGS, "stacktraces", "all")
    with pytest.raises(ConnectionError):
        down()
    attempts = by_name(instrumented, "test_stacktraces_all_and_none.<locals>.down")
    assert all("exception.stacktrace" in a.events[0].attributes for a in attempts)
    instrumented.exporter.clear()
    monkeypatch.setattr(SETTINGS, "stacktraces", "none")
    with pytest.raises(ConnectionError):
        down()
    op = instrumented.span("retry test_stacktraces_all_and_none.<locals>.down")
    assert "exception.stacktrace" not in op.events[0].attributes


def test_messages_are_redacted(instrumented: Otel) -> None:
    @tenacity.retry(stop=tenacity.stop_after_attempt(1), reraise=True)
    def leaky() -> None:
        raise ConnectionError("GET https://bob:hunter2@api.example/x?sig=abc&id=1 failed")

    with pytest.raises(ConnectionError):
        leaky()
    attempt = instrumented.span("test_messages_are_redacted.<locals>.leaky")
    message = attempt.events[0].attributes["exception.message"]
    assert message == "GET https://REDACTED:REDACTED@api.example/x?sig=REDACTED&id=1 failed"


def test_disabled_retrying_is_not_traced(instrumented: Otel) -> None:
    assert tenacity.Retrying(enabled=False)(lambda: 5) == 5
    assert instrumented.spans() == []


def test_internal_error_is_swallowed(instrumented: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_resilience.core.retry import RetryOperation

    def broken(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("bug in otel_resilience")

    monkeypatch.setattr(RetryOperation, "_new_attempt_span", broken)
    flaky = Flaky(1, "fine")
    assert fetch_user_factory(flaky)() == "fine"
    assert flaky.calls == 2


def test_uninstrument_restores_originals(otel: Otel, library: RetryLibrary) -> None:
    from tenacity import AttemptManager, BaseRetrying, Retrying
    from tenacity.asyncio import AsyncRetrying

    retry_checks.uninstrument_restores_originals(otel, library, [
        (Retrying, "__call__"), (AsyncRetrying, "__call__"), (BaseRetrying, "__iter__"), (AsyncRetrying, "__aiter__"),
        (AsyncRetrying, "__anext__"), (BaseRetrying, "iter"), (AsyncRetrying, "iter"), (AttemptManager, "__enter__"),
        (AttemptManager, "__exit__"),
    ])


def test_no_sdk_records_nothing_and_changes_nothing(library: RetryLibrary) -> None:
    # The global providers are the API's defaults here (no SDK configured in this process).
    retry_checks.no_sdk_records_nothing_and_changes_nothing(library)
    assert library.sleeps.waits == [0.001, 0.001]


def _run_policy(failures: int, stop: int, reraise: bool, wait: Any) -> tuple[Any, list[float], int]:
    waits: list[float] = []
    flaky = Flaky(failures)
    retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(stop), wait=wait, sleep=waits.append, reraise=reraise)
    try:
        outcome: Any = retrying(flaky)
    except BaseException as exc:  # noqa: BLE001 - comparing what escapes
        outcome = type(exc)
    return outcome, waits, flaky.calls


@pytest.mark.parametrize("failures,stop,reraise", [(0, 3, False), (2, 3, False), (3, 3, False), (5, 3, True)])
def test_behaviour_identical_with_and_without(otel: Otel, failures: int, stop: int, reraise: bool) -> None:
    wait = tenacity.wait_exponential(multiplier=0.5, max=4)
    bare = _run_policy(failures, stop, reraise, wait)
    TenacityInstrumentor().instrument(**otel.kwargs())
    try:
        traced = _run_policy(failures, stop, reraise, wait)
    finally:
        TenacityInstrumentor().uninstrument()
    assert traced == bare


def test_random_waits_recorded_are_the_waits_slept(instrumented: Otel) -> None:
    # The SDK draws span ids from the `random` module, so a seeded global random gives other jitter once spans
    # exist at all; what we guarantee is that the delay on each attempt is exactly the wait tenacity chose and slept.
    _, slept, calls = _run_policy(5, 4, True, tenacity.wait_random(0, 1))
    attempts = sorted(by_name(instrumented, "Flaky"), key=lambda s: s.attributes[semconv.RETRY_ATTEMPT])
    assert len(attempts) == calls == 4
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [*slept, None]
    assert instrumented.span("retry Flaky").attributes[semconv.RETRY_TOTAL_DELAY] == pytest.approx(sum(slept))
