"""stamina against the contract in DESIGN.md (real SDK, in-memory exporter): every form, sync and async, testing and
deactivated modes, stamina's own hooks untouched, and one operation per stamina retry also when tenacity is
instrumented too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import backoff
import backoff._sync
import pytest
import stamina
import stamina._core
import tenacity
import tenacity.nap
from opentelemetry import trace
from stamina.instrumentation import RetryDetails, get_on_retry_hooks, set_on_retry_hooks

from otel_resilience import semconv
from otel_resilience.instrumentation.backoff import BackoffInstrumentor
from otel_resilience.instrumentation.stamina import StaminaInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from tests.conftest import Otel, instrumented_fixture
from tests.support import retry_checks
from tests.support.retry_checks import RetryLibrary
from tests.support.retry_support import (
    AsyncFlaky,
    Flaky,
    Sleeps,
    by_name,
    fetch_in_threads,
    operation_and_attempts,
)


instrumented = instrumented_fixture(StaminaInstrumentor)


@pytest.fixture
def with_tenacity(instrumented: Otel) -> Iterator[Otel]:
    TenacityInstrumentor().instrument(**instrumented.kwargs())
    yield instrumented
    TenacityInstrumentor().uninstrument()


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    """stamina's sleeps (tenacity's ``time.sleep``; stamina's ``_smart_sleep`` for async) record the wait requested."""
    recorder = Sleeps()
    monkeypatch.setattr(tenacity.nap, "time", SimpleNamespace(sleep=recorder.sleep))
    monkeypatch.setattr(stamina._core, "_smart_sleep", recorder.async_sleep)
    return recorder


@pytest.fixture(autouse=True)
def own_hooks() -> Iterator[list[RetryDetails]]:
    """stamina's hooks are the app's own: a list recorder (no logging, Prometheus or structlog in the way)."""
    seen: list[RetryDetails] = []
    set_on_retry_hooks([seen.append])
    yield seen
    set_on_retry_hooks(None)


@pytest.fixture
def library(sleeps: Sleeps) -> RetryLibrary:
    """stamina as the shared retry checks drive it: ``@stamina.retry`` with its jittered exponential backoff."""

    def retry(fn: Any, attempts: int) -> Any:
        return stamina.retry(on=ConnectionError, attempts=attempts, wait_initial=0.1, wait_jitter=0.5)(fn)

    return RetryLibrary(StaminaInstrumentor, "otel_resilience.stamina", sleeps, retry)


def attempt_delays(attempts: list[Any]) -> list[Any]:
    return [a.attributes.get(semconv.RETRY_DELAY) for a in attempts]


# --- @stamina.retry ----------------------------------------------------------------------------------------------


def test_decorated_fails_twice_then_succeeds(instrumented: Otel, library: RetryLibrary, own_hooks: list[RetryDetails]) -> None:
    flaky = retry_checks.fails_twice_then_succeeds(instrumented, library)
    waits = library.sleeps.waits
    assert 0.1 <= waits[0] <= 0.6 and 0.2 <= waits[1] <= 0.7  # stamina's jittered exponential backoff
    # stamina's own hooks saw the same waits (it derives wait_for from a running float sum: approx)
    name = f"{retry_checks.__name__}.fails_twice_then_succeeds.<locals>.fetch_user"
    assert [(d.name, d.retry_num, d.caused_by) for d in own_hooks] == [(name, 1, flaky.raised[0]), (name, 2, flaky.raised[1])]
    assert [d.wait_for for d in own_hooks] == pytest.approx(waits)


def test_decorated_before_instrumentation(otel: Otel) -> None:
    flaky = Flaky(1)
    fetch = stamina.retry(on=ConnectionError, attempts=3)(flaky)
    StaminaInstrumentor().instrument(**otel.kwargs())
    try:
        assert fetch() == "ok"
    finally:
        StaminaInstrumentor().uninstrument()
    op, attempts = operation_and_attempts(otel, "Flaky")
    assert op.attributes[semconv.RETRY_NAME] == "tests.support.retry_support.Flaky"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2


def test_method_decorated(instrumented: Otel) -> None:
    class Directory:
        def __init__(self) -> None:
            self.flaky = Flaky(1, "user")

        @stamina.retry(on=ConnectionError, attempts=3)
        def fetch_user(self, user_id: int) -> str:
            return str(self.flaky())

    assert Directory().fetch_user(1) == "user"
    qualname = "test_method_decorated.<locals>.Directory.fetch_user"
    op, attempts = operation_and_attempts(instrumented, qualname)
    assert op.attributes[semconv.RETRY_NAME] == f"{__name__}.{qualname}"
    assert len(attempts) == 2


def test_exhausted_reraises_the_same_exception(instrumented: Otel, library: RetryLibrary) -> None:
    retry_checks.exhausted_raises_the_last_exception(instrumented, library)


def test_error_not_retried(instrumented: Otel, library: RetryLibrary) -> None:
    retry_checks.error_not_retried(instrumented, library)


def test_backoff_hook_with_custom_wait_and_refusal(instrumented: Otel, sleeps: Sleeps) -> None:
    def on(exc: Exception) -> bool | float:
        return 2.5 if str(exc) == "down 1" else False

    flaky = Flaky(5)
    with pytest.raises(ConnectionError):
        stamina.retry(on=on, attempts=5)(flaky)()
    assert sleeps.waits == [2.5]
    op, attempts = operation_and_attempts(instrumented, "Flaky")
    assert attempt_delays(attempts) == [2.5, None]
    assert op.attributes[semconv.RETRY_RESULT] == "not_retried"


def test_timeout_only_has_no_attempt_limit(instrumented: Otel) -> None:
    stamina.retry(on=ConnectionError, attempts=None, timeout=60)(Flaky(1))()
    op = instrumented.span("retry Flaky")
    assert semconv.RETRY_MAX_ATTEMPTS not in op.attributes
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2


async def test_async_decorated(instrumented: Otel, sleeps: Sleeps) -> None:
    flaky = AsyncFlaky(1, "async")

    @stamina.retry(on=ConnectionError, attempts=3)
    async def fetch_user() -> str:
        return await flaky()

    assert await fetch_user() == "async"
    op, attempts = operation_and_attempts(instrumented, "test_async_decorated.<locals>.fetch_user")
    assert op.attributes[semconv.RETRY_RESULT] == "success"  # ended when the attempt returned, not at GC
    assert attempt_delays(attempts) == [*sleeps.waits, None]


def test_generator_decorated(instrumented: Otel) -> None:
    calls = {"n": 0}

    @stamina.retry(on=ConnectionError, attempts=3)
    def rows() -> Iterator[int]:
        calls["n"] += 1
        yield 1
        if calls["n"] == 1:
            raise ConnectionError("cut")
        yield 2

    assert list(rows()) == [1, 1, 2]  # stamina restarts the generator from the beginning
    op, attempts = operation_and_attempts(instrumented, "test_generator_decorated.<locals>.rows")
    assert op.attributes[semconv.RETRY_RESULT] == "success"
    assert [a.attributes.get(semconv.ERROR_TYPE) for a in attempts] == ["ConnectionError", None]


async def test_async_generator_decorated(instrumented: Otel) -> None:
    calls = {"n": 0}

    @stamina.retry(on=ConnectionError, attempts=3)
    async def rows() -> AsyncIterator[int]:
        calls["n"] += 1
        yield 1
        if calls["n"] == 1:
            raise ConnectionError("cut")
        yield 2

    assert [r async for r in rows()] == [1, 1, 2]
    op, attempts = operation_and_attempts(instrumented, "test_async_generator_decorated.<locals>.rows")
    assert op.attributes[semconv.RETRY_RESULT] == "success"
    assert len(attempts) == 2


# --- retry_context and the callers -------------------------------------------------------------------------------


def test_retry_context_takes_the_enclosing_function_name(instrumented: Otel) -> None:
    flaky = Flaky(1)

    def load_profile() -> str:
        for attempt in stamina.retry_context(on=ConnectionError, attempts=3):
            with attempt:
                return str(flaky())
        raise AssertionError("unreachable")

    assert load_profile() == "ok"
    qualname = "test_retry_context_takes_the_enclosing_function_name.<locals>.load_profile"
    op, attempts = operation_and_attempts(instrumented, qualname)
    assert op.attributes[semconv.RETRY_NAME] == f"{__name__}.{qualname}"
    assert op.attributes[semconv.RETRY_RESULT] == "success"
    assert [a.attributes.get(semconv.ERROR_TYPE) for a in attempts] == ["ConnectionError", None]


def test_retry_context_exhausted(instrumented: Otel) -> None:
    def load_profile() -> None:
        for attempt in stamina.retry_context(on=ConnectionError, attempts=2):
            with attempt:
                raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        load_profile()
    op = instrumented.span("retry test_retry_context_exhausted.<locals>.load_profile")
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2


async def test_async_retry_context(instrumented: Otel) -> None:
    flaky = AsyncFlaky(2, "v")

    async def load_profile() -> str:
        async for attempt in stamina.retry_context(on=ConnectionError, attempts=5):
            with attempt:
                return str(await flaky())
        raise AssertionError("unreachable")

    assert await load_profile() == "v"
    op, attempts = operation_and_attempts(instrumented, "test_async_retry_context.<locals>.load_profile")
    assert op.attributes[semconv.RETRY_RESULT] == "success"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 3


async def test_retrying_callers_name_the_callable(instrumented: Otel) -> None:
    caller = stamina.RetryingCaller(attempts=3).on(ConnectionError)
    assert caller(Flaky(1), 1) == "ok"
    async_caller = stamina.AsyncRetryingCaller(attempts=3)
    assert await async_caller(ConnectionError, AsyncFlaky(1)) == "ok"
    assert [op.attributes[semconv.RETRY_NAME] for op in by_name(instrumented, "retry Flaky")] == ["tests.support.retry_support.Flaky"]
    assert [op.attributes[semconv.RETRY_ATTEMPTS] for op in by_name(instrumented, "retry AsyncFlaky")] == [2]


# --- modes -------------------------------------------------------------------------------------------------------


def test_testing_mode(instrumented: Otel, sleeps: Sleeps) -> None:
    flaky = Flaky(10)
    with stamina.set_testing(True, attempts=2), pytest.raises(ConnectionError):
        stamina.retry(on=ConnectionError, attempts=10)(flaky)()
    assert flaky.calls == 2 and sleeps.waits == [0.0]
    op, attempts = operation_and_attempts(instrumented, "Flaky")
    assert op.attributes[semconv.RETRY_MAX_ATTEMPTS] == 2
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert attempt_delays(attempts) == [0.0, None]


def test_deactivated_is_one_attempt(instrumented: Otel) -> None:
    stamina.set_active(False)
    try:
        with pytest.raises(ConnectionError):
            stamina.retry(on=ConnectionError, attempts=10)(Flaky(1))()
    finally:
        stamina.set_active(True)
    op, (attempt,) = operation_and_attempts(instrumented, "Flaky")
    assert op.attributes[semconv.RETRY_MAX_ATTEMPTS] == 1
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"


def test_stamina_hooks_are_left_alone(instrumented: Otel, own_hooks: list[RetryDetails]) -> None:
    def hook(details: RetryDetails) -> None:
        own_hooks.append(details)

    set_on_retry_hooks([hook])
    assert get_on_retry_hooks() == (hook,)
    StaminaInstrumentor().uninstrument()
    StaminaInstrumentor().instrument(**instrumented.kwargs())
    assert get_on_retry_hooks() == (hook,)  # instrumenting registers nothing with stamina
    stamina.retry(on=ConnectionError, attempts=3)(Flaky(1))()
    assert [d.retry_num for d in own_hooks] == [1]


# --- with tenacity instrumented too ------------------------------------------------------------------------------


@pytest.mark.parametrize("tenacity_first", [True, False])
def test_one_operation_when_tenacity_is_instrumented_too(otel: Otel, tenacity_first: bool) -> None:
    order = [TenacityInstrumentor(), StaminaInstrumentor()]
    for instrumentor in order if tenacity_first else reversed(order):
        instrumentor.instrument(**otel.kwargs())
    try:
        stamina.retry(on=ConnectionError, attempts=3)(Flaky(2))()

        def with_context() -> None:
            for attempt in stamina.retry_context(on=ConnectionError, attempts=3):
                with attempt:
                    Flaky(0)()

        with_context()
        tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none())(Flaky(1))()
    finally:
        for instrumentor in order:
            instrumentor.uninstrument()
    scopes = [(s.instrumentation_scope.name, s.name) for s in otel.spans()]
    assert sorted(scopes) == sorted(
        [("otel_resilience.stamina", "Flaky")] * 3 + [("otel_resilience.stamina", "retry Flaky")]
        + [("otel_resilience.stamina", "test_one_operation_when_tenacity_is_instrumented_too.<locals>.with_context"),
           ("otel_resilience.stamina", "retry test_one_operation_when_tenacity_is_instrumented_too.<locals>.with_context")]
        + [("otel_resilience.tenacity", "Flaky")] * 2 + [("otel_resilience.tenacity", "retry Flaky")]
    )
    assert all(s.attributes.get(semconv.RETRY_DEPTH, 1) == 1 for s in otel.spans())


def test_only_tenacity_instrumented_sees_stamina_as_tenacity(otel: Otel) -> None:
    TenacityInstrumentor().instrument(**otel.kwargs())
    try:
        stamina.retry(on=ConnectionError, attempts=3)(Flaky(1))()
    finally:
        TenacityInstrumentor().uninstrument()
    (op,) = [s for s in otel.spans() if s.name.startswith("retry ")]
    assert op.instrumentation_scope.name == "otel_resilience.tenacity"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2


# --- context, nesting, concurrency --------------------------------------------------------------------------------


def test_spans_made_inside_an_attempt_are_its_children(instrumented: Otel) -> None:
    tracer = instrumented.tracer_provider.get_tracer("app")

    @stamina.retry(on=ConnectionError, attempts=2)
    def query() -> None:
        with tracer.start_as_current_span("db.query"):
            pass

    with tracer.start_as_current_span("handler") as handler:
        query()
    op = instrumented.span("retry test_spans_made_inside_an_attempt_are_its_children.<locals>.query")
    attempt = instrumented.span("test_spans_made_inside_an_attempt_are_its_children.<locals>.query")
    assert op.parent.span_id == handler.get_span_context().span_id
    assert instrumented.span("db.query").parent.span_id == attempt.context.span_id
    assert not trace.get_current_span().get_span_context().is_valid


def test_nested_stamina_in_stamina_records_depth(instrumented: Otel, library: RetryLibrary) -> None:
    retry_checks.nested_retries_record_depth(instrumented, library)


def test_nested_across_libraries(with_tenacity: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    """backoff inside stamina inside tenacity: depths 1, 2, 3, each attempt the parent of the next level."""
    monkeypatch.setattr(backoff._sync, "time", SimpleNamespace(sleep=lambda s: None))
    BackoffInstrumentor().instrument(**with_tenacity.kwargs())
    try:
        calls = Flaky(100)

        @backoff.on_exception(backoff.constant, ConnectionError, interval=0, max_tries=2)
        def innermost() -> None:
            calls()

        @stamina.retry(on=ConnectionError, attempts=2)
        def middle() -> None:
            innermost()

        @tenacity.retry(stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_none(), reraise=True)
        def outer() -> None:
            middle()

        with pytest.raises(ConnectionError):
            outer()
    finally:
        BackoffInstrumentor().uninstrument()
    assert calls.calls == 8  # 2 x 2 x 2
    prefix = "test_nested_across_libraries.<locals>"
    depths = {
        (s.instrumentation_scope.name, s.name, s.attributes[semconv.RETRY_DEPTH])
        for s in with_tenacity.spans() if s.name.startswith("retry ")
    }
    assert depths == {
        ("otel_resilience.tenacity", f"retry {prefix}.outer", 1),
        ("otel_resilience.stamina", f"retry {prefix}.middle", 2),
        ("otel_resilience.backoff", f"retry {prefix}.innermost", 3),
    }
    middle_attempts = {s.context.span_id for s in by_name(with_tenacity, f"{prefix}.middle")}
    assert {s.parent.span_id for s in by_name(with_tenacity, f"retry {prefix}.innermost")} == middle_attempts


async def test_concurrent_tasks_do_not_mix(instrumented: Otel) -> None:
    counts: dict[int, int] = {}

    @stamina.retry(on=ConnectionError, attempts=5)
    async def fetch_user(failures: int) -> int:
        await asyncio.sleep(0)
        counts[failures] = counts.get(failures, 0) + 1
        if counts[failures] <= failures:
            raise ConnectionError("down")
        return failures

    assert await asyncio.gather(*(fetch_user(n) for n in range(4))) == [0, 1, 2, 3]
    ops = by_name(instrumented, "retry test_concurrent_tasks_do_not_mix.<locals>.fetch_user")
    assert sorted(op.attributes[semconv.RETRY_ATTEMPTS] for op in ops) == [1, 2, 3, 4]


def test_threads_do_not_mix(instrumented: Otel) -> None:
    results, qualname = fetch_in_threads(stamina.retry(on=ConnectionError, attempts=5))
    assert results == {0: 0, 1: 1, 2: 2, 3: 3}
    ops = by_name(instrumented, f"retry {qualname}")
    assert sorted(op.attributes[semconv.RETRY_ATTEMPTS] for op in ops) == [1, 2, 3, 4]


async def test_cancellation_aborts(instrumented: Otel, library: RetryLibrary) -> None:
    await retry_checks.cancellation_aborts(instrumented, library)


# --- lifecycle and behaviour -------------------------------------------------------------------------------------


def test_uninstrument_restores_originals(otel: Otel, library: RetryLibrary) -> None:
    from stamina._core import _RetryContextIterator
    from tenacity import AttemptManager, BaseRetrying, Retrying
    from tenacity.asyncio import AsyncRetrying

    patched = [
        (_RetryContextIterator, "__iter__"), (_RetryContextIterator, "__aiter__"), (BaseRetrying, "__iter__"), (AsyncRetrying, "__aiter__"),
        (AsyncRetrying, "__anext__"), (BaseRetrying, "iter"), (AsyncRetrying, "iter"), (AttemptManager, "__enter__"),
        (AttemptManager, "__exit__"),
    ]
    untouched = [(Retrying, "__call__"), (AsyncRetrying, "__call__")]  # stamina needs no call forms
    retry_checks.uninstrument_restores_originals(otel, library, patched, untouched)


def test_no_sdk_records_nothing_and_changes_nothing(library: RetryLibrary) -> None:
    retry_checks.no_sdk_records_nothing_and_changes_nothing(library)


SCENARIOS: dict[str, tuple[int, dict[str, Any]]] = {
    "success_first": (0, {}),
    "recovers": (2, {}),
    "exhausted": (9, {}),
    "not_retried": (1, {"on": KeyError}),
}


def _run(failures: int, options: dict[str, Any], sleeps: Sleeps, hooks: list[RetryDetails]) -> tuple[Any, ...]:
    flaky = Flaky(failures, "v")
    sleeps.waits.clear()
    hooks.clear()
    fetch = stamina.retry(**{"on": ConnectionError, "attempts": 4, "wait_jitter": 0, **options})(flaky)
    try:
        outcome: Any = fetch()
    except BaseException as exc:  # noqa: BLE001 - comparing what escapes
        outcome = ("raised", flaky.raised.index(exc))
    return outcome, flaky.calls, list(sleeps.waits), [(d.retry_num, d.wait_for, flaky.raised.index(d.caused_by)) for d in hooks]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_behaviour_identical_with_and_without(otel: Otel, sleeps: Sleeps, own_hooks: list[RetryDetails], scenario: str) -> None:
    failures, options = SCENARIOS[scenario]
    bare = _run(failures, options, sleeps, own_hooks)
    StaminaInstrumentor().instrument(**otel.kwargs())
    try:
        traced = _run(failures, options, sleeps, own_hooks)
    finally:
        StaminaInstrumentor().uninstrument()
    assert traced == bare
    assert len(by_name(otel, "retry Flaky")) == 1


def test_the_stamina_internals_naming_reads_are_still_there() -> None:
    """What `decorator_frames` reads of stamina's internals: if a stamina release renames them, this fails (and
    functions decorated with ``@stamina.retry`` would otherwise be named after the function they are called from)."""
    from otel_resilience.instrumentation.stamina._adapter import decorator_frames

    codes, variable = decorator_frames()
    names = {code.co_name for code in codes}
    assert {"sync_inner", "async_inner"} <= names <= {"sync_inner", "async_inner", "sync_gen_inner", "async_gen_inner"}
    assert all(variable in code.co_freevars for code in codes)
