"""retrying against the contract in DESIGN.md (real SDK, in-memory exporter): ``@retry`` (decorated before and after
instrumentation) and ``Retrying(...).call(fn)``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import retrying
from opentelemetry import trace
from retrying import RetryError, Retrying, retry

from otel_resilience import semconv
from otel_resilience.instrumentation.retrying import RetryingInstrumentor
from tests.conftest import Otel, instrumented_fixture
from tests.support import retry_checks
from tests.support.retry_checks import RetryLibrary
from tests.support.retry_support import (
    Flaky,
    Sleeps,
    by_name,
    fetch_in_threads,
    operation_and_attempts,
)


instrumented = instrumented_fixture(RetryingInstrumentor)


class Clock:
    """retrying's clock (``time.time`` in its module), moved only by the recorded sleeps."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    """retrying's ``time.sleep`` records the wait requested (in seconds) and returns at once; its clock follows."""
    clock = Clock()
    recorder = Sleeps(clock.advance)
    monkeypatch.setattr(retrying, "time", SimpleNamespace(sleep=recorder.sleep, time=clock.time))
    return recorder


@pytest.fixture
def library(sleeps: Sleeps) -> RetryLibrary:
    """retrying as the shared retry checks drive it: ``@retry`` with a fixed wait of 250 ms."""

    def retry_on(fn: Any, attempts: int) -> Any:
        return retry(
            stop_max_attempt_number=attempts, wait_fixed=250, retry_on_exception=lambda e: isinstance(e, ConnectionError)
        )(fn)

    def retry_none(fn: Any, attempts: int) -> Any:
        return retry(retry_on_result=lambda r: r is None, stop_max_attempt_number=attempts, wait_fixed=250)(fn)

    return RetryLibrary(RetryingInstrumentor, "otel_resilience.retrying", sleeps, retry_on, retry_none)


def test_decorated_fails_twice_then_succeeds(instrumented: Otel, library: RetryLibrary) -> None:
    retry_checks.fails_twice_then_succeeds(instrumented, library)
    assert library.sleeps.waits == [0.25, 0.25]


def test_decorated_before_instrumentation(otel: Otel, sleeps: Sleeps) -> None:
    flaky = Flaky(1)
    fetch = retry(stop_max_attempt_number=3, wait_fixed=10)(flaky)
    RetryingInstrumentor().instrument(**otel.kwargs())
    try:
        assert fetch() == "ok"
    finally:
        RetryingInstrumentor().uninstrument()
    op, attempts = operation_and_attempts(otel, "Flaky")
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [0.01, None]


def test_exhausted_reraises_the_original_exception(instrumented: Otel, library: RetryLibrary) -> None:
    retry_checks.exhausted_raises_the_last_exception(instrumented, library)
    assert library.sleeps.waits == [0.25, 0.25]


def test_exponential_waits_are_recorded(instrumented: Otel, sleeps: Sleeps) -> None:
    flaky = Flaky(10)
    with pytest.raises(ConnectionError) as caught:
        Retrying(stop_max_attempt_number=3, wait_exponential_multiplier=100).call(flaky)
    assert caught.value is flaky.raised[-1]
    assert sleeps.waits == [0.2, 0.4]  # retrying's exponential wait: multiplier * 2**attempt ms
    op, attempts = operation_and_attempts(instrumented, "Flaky")
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert op.attributes[semconv.RETRY_MAX_ATTEMPTS] == 3
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [0.2, 0.4, None]


def test_exhausted_with_wrap_exception_raises_retry_error(instrumented: Otel) -> None:
    flaky = Flaky(10)
    with pytest.raises(RetryError) as caught:
        Retrying(stop_max_attempt_number=2, wait_fixed=0, wrap_exception=True).call(flaky)
    assert caught.value.last_attempt.value[1] is flaky.raised[-1]
    op = instrumented.span("retry Flaky")
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert op.attributes[semconv.ERROR_TYPE] == "retrying.RetryError"


def test_error_not_retried(instrumented: Otel, library: RetryLibrary) -> None:
    retry_checks.error_not_retried(instrumented, library)


def test_error_not_retried_with_wrap_exception(instrumented: Otel) -> None:
    with pytest.raises(RetryError):
        Retrying(retry_on_exception=lambda e: False, wrap_exception=True).call(Flaky(1, error=KeyError))
    op = instrumented.span("retry Flaky")
    assert op.attributes[semconv.RETRY_RESULT] == "not_retried"
    assert op.attributes[semconv.ERROR_TYPE] == "retrying.RetryError"


def test_rejected_results(instrumented: Otel, library: RetryLibrary) -> None:
    retry_checks.rejected_result_is_a_failed_attempt(instrumented, library)
    assert library.sleeps.waits == [0.25, 0.25]


def test_rejected_result_exhausted_raises_retry_error(instrumented: Otel) -> None:
    def poll() -> None:
        return None

    with pytest.raises(RetryError) as caught:
        Retrying(retry_on_result=lambda r: r is None, stop_max_attempt_number=2, wait_fixed=0).call(poll)
    assert caught.value.last_attempt.value is None
    op, attempts = operation_and_attempts(instrumented, "test_rejected_result_exhausted_raises_retry_error.<locals>.poll")
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert op.attributes[semconv.ERROR_TYPE] == "retrying.RetryError"
    assert [a.attributes[semconv.ERROR_TYPE] for a in attempts] == ["rejected_result", "rejected_result"]


def test_stop_max_delay_has_no_attempt_limit(instrumented: Otel, sleeps: Sleeps) -> None:
    with pytest.raises(ConnectionError):
        Retrying(stop_max_delay=1000, wait_fixed=400).call(Flaky(10))
    assert sleeps.waits == [0.4, 0.4, 0.4]  # at 0, 400 and 800 ms the delay is under the limit; at 1200 it is not
    op = instrumented.span("retry Flaky")
    assert semconv.RETRY_MAX_ATTEMPTS not in op.attributes
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 4
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"


@pytest.mark.parametrize(
    "options,limit",
    [
        ({"stop": "stop_after_attempt", "stop_max_attempt_number": 2}, 2),
        ({"stop": "stop_after_attempt"}, 5),  # retrying's own default count
        ({"stop_max_attempt_number": 2, "stop_max_delay": 10_000}, 2),
        ({"stop_func": lambda attempts, delay: attempts >= 2}, None),
    ],
    ids=["named_stop", "named_stop_default", "combined", "stop_func"],
)
def test_attempt_limit_read_from_the_stop_condition(instrumented: Otel, options: dict[str, Any], limit: int | None) -> None:
    with pytest.raises(ConnectionError):
        Retrying(wait_fixed=0, **options).call(Flaky(10))
    assert instrumented.span("retry Flaky").attributes.get(semconv.RETRY_MAX_ATTEMPTS) == limit


def test_random_wait_recorded_is_the_wait_slept(instrumented: Otel, sleeps: Sleeps) -> None:
    with pytest.raises(ConnectionError):
        Retrying(stop_max_attempt_number=4, wait_random_min=100, wait_random_max=900).call(Flaky(10))
    op, attempts = operation_and_attempts(instrumented, "Flaky")
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [*sleeps.waits, None]


def test_jitter_is_measured_not_read(instrumented: Otel, sleeps: Sleeps) -> None:
    # retrying adds the jitter inline and sleeps: with jitter the delay is the measured gap between attempts
    with pytest.raises(ConnectionError):
        Retrying(stop_max_attempt_number=3, wait_fixed=100, wait_jitter_max=50).call(Flaky(10))
    assert len(sleeps.waits) == 2 and all(0.1 <= w <= 0.15 for w in sleeps.waits)
    op, attempts = operation_and_attempts(instrumented, "Flaky")
    delays = [a.attributes.get(semconv.RETRY_DELAY) for a in attempts]
    assert delays[2] is None
    for delay, earlier, later in zip(delays, attempts, attempts[1:]):
        assert delay == pytest.approx((later.start_time - earlier.end_time) / 1e9)
        assert isinstance(delay, float)


def test_spans_made_inside_an_attempt_are_its_children(instrumented: Otel) -> None:
    tracer = instrumented.tracer_provider.get_tracer("app")

    def query() -> str:
        with tracer.start_as_current_span("db.query"):
            return "row"

    with tracer.start_as_current_span("handler") as handler:
        assert Retrying().call(query) == "row"
    op = instrumented.span("retry test_spans_made_inside_an_attempt_are_its_children.<locals>.query")
    attempt = instrumented.span("test_spans_made_inside_an_attempt_are_its_children.<locals>.query")
    db = instrumented.span("db.query")
    assert op.parent.span_id == handler.get_span_context().span_id
    assert db.parent.span_id == attempt.context.span_id
    assert not trace.get_current_span().get_span_context().is_valid


def test_nested_retries_record_depth(instrumented: Otel, library: RetryLibrary) -> None:
    retry_checks.nested_retries_record_depth(instrumented, library)


def test_keyboard_interrupt_aborts(instrumented: Otel) -> None:
    with pytest.raises(KeyboardInterrupt):
        Retrying(stop_max_attempt_number=3).call(Flaky(1, error=KeyboardInterrupt))
    op = instrumented.span("retry Flaky")
    assert op.attributes[semconv.RETRY_RESULT] == "aborted"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 1


def test_hooks_of_the_app_still_run(instrumented: Otel) -> None:
    log: list[tuple[str, int]] = []
    with pytest.raises(ConnectionError):
        Retrying(
            stop_max_attempt_number=2, wait_fixed=0,
            before_attempts=lambda n: log.append(("before", n)), after_attempts=lambda n: log.append(("after", n)),
        ).call(Flaky(5))
    assert log == [("before", 1), ("after", 1), ("before", 2), ("after", 2)]


def test_threads_share_one_retrying_object(instrumented: Otel) -> None:
    shared = Retrying(stop_max_attempt_number=5, wait_fixed=0)
    results, qualname = fetch_in_threads(lambda fetch_user: functools.partial(shared.call, fetch_user))
    assert results == {0: 0, 1: 1, 2: 2, 3: 3}
    ops = by_name(instrumented, f"retry {qualname}")
    assert sorted(op.attributes[semconv.RETRY_ATTEMPTS] for op in ops) == [1, 2, 3, 4]
    for op in ops:
        mine = [a for a in by_name(instrumented, qualname) if a.parent.span_id == op.context.span_id]
        assert len(mine) == op.attributes[semconv.RETRY_ATTEMPTS]


def test_wait_strategy_stays_transparent(instrumented: Otel) -> None:
    r = Retrying(wait="fixed_sleep", wait_fixed=5, stop_max_attempt_number=2)
    original = r.wait
    with pytest.raises(ConnectionError):
        r.call(Flaky(5))
    assert r.wait == original and r.wait(1, 0) == 5 and r.wait.__name__ == "fixed_sleep"


def test_uninstrument_restores_originals(otel: Otel, library: RetryLibrary) -> None:
    retry_checks.uninstrument_restores_originals(otel, library, [(Retrying, "call"), (Retrying, "should_reject")])


def test_no_sdk_records_nothing_and_changes_nothing(library: RetryLibrary) -> None:
    retry_checks.no_sdk_records_nothing_and_changes_nothing(library)
    assert library.sleeps.waits == [0.25, 0.25]


SCENARIOS: dict[str, tuple[int, dict[str, Any]]] = {
    "success_first": (0, {}),
    "recovers": (2, {}),
    "exhausted": (9, {}),
    "exhausted_wrapped": (9, {"wrap_exception": True}),
    "not_retried": (1, {"retry_on_exception": lambda e: False}),
    "rejected": (0, {"retry_on_result": lambda r: r == "v"}),
    "jitter": (2, {"wait_jitter_max": 30}),
}


def _run(failures: int, options: dict[str, Any], sleeps: Sleeps, decorate: bool) -> tuple[Any, ...]:
    flaky = Flaky(failures, "v")
    sleeps.waits.clear()
    kwargs = {"stop_max_attempt_number": 4, "wait_incrementing_start": 10, "wait_incrementing_increment": 20, **options}
    fn: Callable[[], Any] = retry(**kwargs)(flaky) if decorate else (lambda: Retrying(**kwargs).call(flaky))
    try:
        outcome: Any = fn()
    except RetryError as exc:
        outcome = ("retry_error", exc.last_attempt.attempt_number, exc.last_attempt.has_exception)
    except BaseException as exc:  # noqa: BLE001 - comparing what escapes
        outcome = ("raised", flaky.raised.index(exc))
    return outcome, flaky.calls


@pytest.mark.parametrize("decorate", [True, False], ids=["decorator", "call"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_behaviour_identical_with_and_without(otel: Otel, sleeps: Sleeps, scenario: str, decorate: bool) -> None:
    failures, options = SCENARIOS[scenario]
    bare = _run(failures, options, sleeps, decorate)
    bare_waits = list(sleeps.waits)
    RetryingInstrumentor().instrument(**otel.kwargs())
    try:
        traced = _run(failures, options, sleeps, decorate)
    finally:
        RetryingInstrumentor().uninstrument()
    assert traced == bare
    assert len(sleeps.waits) == len(bare_waits)
    if scenario != "jitter":  # jitter comes from the global random, which the SDK also draws span ids from
        assert sleeps.waits == bare_waits
    assert len(by_name(otel, "retry Flaky")) == 1
