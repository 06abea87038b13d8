"""The contract every retry library is held to, written once: each check runs one scenario through a library's own
retry (a `RetryLibrary`, built by that library's test module) and asserts the exact spans, attributes and metric
points. What only one library does stays in its own test module, often right after calling a check here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_resilience import semconv
from tests.conftest import Otel
from tests.support.retry_support import Flaky, Sleeps, by_name, exception_events, metric_summary, operation_and_attempts

Retried = Callable[..., Any]


@dataclass
class RetryLibrary:
    """How one library spells the shared scenarios.

    `retry(fn, attempts)` is the library's usual retry of `fn`: at most `attempts` attempts, retrying ConnectionError
    only, waiting between attempts (each wait recorded in `sleeps`, never slept) and raising the last exception
    itself when exhausted. `retry_none(fn, attempts)`, where the library can, retries while `fn` returns None."""

    instrumentor: type[BaseInstrumentor]
    scope: str
    sleeps: Sleeps
    retry: Callable[[Retried, int], Retried]
    retry_none: Callable[[Retried, int], Retried] | None = None


def fails_twice_then_succeeds(otel: Otel, library: RetryLibrary) -> Flaky:
    """Two failed attempts, then success: every attribute of every span and every metric point, exactly."""
    flaky = Flaky(2, "user")

    def fetch_user(user_id: int) -> str:
        return flaky()

    assert library.retry(fetch_user, 5)(7) == "user"
    assert flaky.calls == 3
    waits = library.sleeps.waits
    assert len(waits) == 2
    qualname = "fails_twice_then_succeeds.<locals>.fetch_user"
    name = f"{__name__}.{qualname}"
    op, attempts = operation_and_attempts(otel, qualname)
    assert dict(op.attributes) == {
        semconv.RETRY_NAME: name,
        semconv.RETRY_DEPTH: 1,
        semconv.RETRY_MAX_ATTEMPTS: 5,
        semconv.RETRY_ATTEMPTS: 3,
        semconv.RETRY_RESULT: "success",
        semconv.RETRY_TOTAL_DELAY: pytest.approx(sum(waits)),
    }
    assert isinstance(op.attributes[semconv.RETRY_TOTAL_DELAY], float)
    assert isinstance(op.attributes[semconv.RETRY_DEPTH], int)
    assert op.status.status_code is StatusCode.UNSET
    assert op.events == ()
    assert op.instrumentation_scope.name == library.scope
    assert [dict(a.attributes) for a in attempts] == [
        {semconv.RETRY_NAME: name, semconv.RETRY_ATTEMPT: 1, semconv.RETRY_DELAY: waits[0], semconv.ERROR_TYPE: "ConnectionError"},
        {semconv.RETRY_NAME: name, semconv.RETRY_ATTEMPT: 2, semconv.RETRY_DELAY: waits[1], semconv.ERROR_TYPE: "ConnectionError"},
        {semconv.RETRY_NAME: name, semconv.RETRY_ATTEMPT: 3},
    ]
    assert all(isinstance(a.attributes.get(semconv.RETRY_DELAY, 0.0), float) for a in attempts)
    assert [a.status.status_code for a in attempts] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert [exception_events(a) for a in attempts] == [
        [{"exception.type": "ConnectionError", "exception.message": "down 1"}],
        [{"exception.type": "ConnectionError", "exception.message": "down 2"}],
        [],
    ]
    assert metric_summary(otel, semconv.METRIC_RETRY_ATTEMPTS) == [
        ({semconv.RETRY_NAME: name, semconv.RETRY_RESULT: "success", semconv.RETRY_DEPTH: 1}, 1, 3)
    ]
    (attempts_point,) = otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS)
    assert list(attempts_point.explicit_bounds) == list(semconv.RETRY_ATTEMPTS_BUCKETS)
    (duration,) = otel.metric_points(semconv.METRIC_RETRY_DURATION)
    assert dict(duration.attributes) == {semconv.RETRY_NAME: name, semconv.RETRY_RESULT: "success"}
    assert duration.count == 1 and duration.sum > 0
    assert list(duration.explicit_bounds) == list(semconv.RETRY_DURATION_BUCKETS)
    return flaky


def exhausted_raises_the_last_exception(otel: Otel, library: RetryLibrary) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """Every attempt fails: the caller gets the very last exception; the operation is exhausted and carries the one
    stacktrace."""
    flaky = Flaky(10)
    with pytest.raises(ConnectionError) as caught:
        library.retry(flaky, 3)()
    assert caught.value is flaky.raised[-1]
    assert flaky.calls == 3
    op, attempts = operation_and_attempts(otel, "Flaky")
    assert op.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 3
    assert op.attributes[semconv.RETRY_MAX_ATTEMPTS] == 3
    assert op.attributes[semconv.ERROR_TYPE] == "ConnectionError"
    assert op.status.status_code is StatusCode.ERROR
    (event,) = exception_events(op)
    assert event["exception.message"] == "down 3"
    assert "Traceback" in event["exception.stacktrace"]  # the final failure carries the stacktrace, once
    assert len(library.sleeps.waits) == 2
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [*library.sleeps.waits, None]
    assert all("exception.stacktrace" not in exception_events(a)[0] for a in attempts)
    (point,) = otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS)
    assert dict(point.attributes)[semconv.RETRY_RESULT] == "exhausted"
    return op, attempts


def error_not_retried(otel: Otel, library: RetryLibrary) -> None:
    """An error the retry does not cover: one attempt, the same exception object, ``not_retried``."""
    flaky = Flaky(1, error=ValueError)
    with pytest.raises(ValueError) as caught:
        library.retry(flaky, 5)()
    assert caught.value is flaky.raised[0]
    assert flaky.calls == 1
    op, (attempt,) = operation_and_attempts(otel, "Flaky")
    assert op.attributes[semconv.RETRY_RESULT] == "not_retried"
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 1
    assert op.attributes[semconv.ERROR_TYPE] == "ValueError"
    assert op.status.status_code is StatusCode.ERROR
    assert attempt.attributes[semconv.ERROR_TYPE] == "ValueError"
    assert semconv.RETRY_DELAY not in attempt.attributes


def rejected_result_is_a_failed_attempt(otel: Otel, library: RetryLibrary) -> None:
    """Two results the retry rejects, then one it accepts: failed attempts without exception events, then success."""
    assert library.retry_none is not None, "only for libraries that retry on a result"
    results = iter([None, None, "ready"])

    def poll() -> str | None:
        return next(results)

    assert library.retry_none(poll, 5)() == "ready"
    op, attempts = operation_and_attempts(otel, "rejected_result_is_a_failed_attempt.<locals>.poll")
    assert [a.attributes.get(semconv.ERROR_TYPE) for a in attempts] == ["rejected_result", "rejected_result", None]
    assert [a.status.status_code for a in attempts] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert all(a.events == () for a in attempts)  # a rejected value is not an exception
    assert len(library.sleeps.waits) == 2
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [*library.sleeps.waits, None]
    assert op.attributes[semconv.RETRY_RESULT] == "success"
    assert op.status.status_code is StatusCode.UNSET


def nested_retries_record_depth(otel: Otel, library: RetryLibrary) -> None:
    """A retry inside a retry: 3 x 3 calls, the inner operations at depth 2 under the outer attempts."""
    inner_calls = Flaky(100)

    def inner() -> None:
        inner_calls()

    retried_inner = library.retry(inner, 3)

    def outer() -> None:
        retried_inner()

    with pytest.raises(ConnectionError):
        library.retry(outer, 3)()
    assert inner_calls.calls == 9  # 3 x 3: the amplification the depth makes visible
    prefix = "nested_retries_record_depth.<locals>"
    inner_ops = by_name(otel, f"retry {prefix}.inner")
    assert otel.span(f"retry {prefix}.outer").attributes[semconv.RETRY_DEPTH] == 1
    assert [op.attributes[semconv.RETRY_DEPTH] for op in inner_ops] == [2, 2, 2]
    outer_attempts = {s.context.span_id for s in by_name(otel, f"{prefix}.outer")}
    assert {op.parent.span_id for op in inner_ops} == outer_attempts
    name = f"{__name__}.{prefix}"
    assert metric_summary(otel, semconv.METRIC_RETRY_ATTEMPTS) == [
        ({semconv.RETRY_NAME: f"{name}.outer", semconv.RETRY_RESULT: "exhausted", semconv.RETRY_DEPTH: 1}, 1, 3),
        ({semconv.RETRY_NAME: f"{name}.inner", semconv.RETRY_RESULT: "exhausted", semconv.RETRY_DEPTH: 2}, 3, 9),
    ]


async def cancellation_aborts(otel: Otel, library: RetryLibrary) -> None:
    """A task cancelled during its first attempt of a retried coroutine function: the CancelledError reaches the
    awaiting code, and the operation ends ``aborted`` with the cancellation's type."""
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(library.retry(slow, 3)())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    op = otel.span("retry cancellation_aborts.<locals>.slow")
    assert op.attributes[semconv.RETRY_RESULT] == "aborted"
    assert op.attributes[semconv.ERROR_TYPE] == "asyncio.exceptions.CancelledError"


def no_sdk_records_nothing_and_changes_nothing(
    library: RetryLibrary, while_instrumented: Callable[[], None] = lambda: None
) -> Flaky:
    """Instrumented with the API's default providers (no SDK in this process): same result, same calls and waits,
    no span made current. `while_instrumented` checks what else the library must leave as it was, before
    ``uninstrument()``."""
    library.instrumentor().instrument()
    try:
        flaky = Flaky(2, "v")
        assert library.retry(flaky, 3)() == "v"
        assert flaky.calls == 3 and len(library.sleeps.waits) == 2
        assert not trace.get_current_span().get_span_context().is_valid
        while_instrumented()
        return flaky
    finally:
        library.instrumentor().uninstrument()


def uninstrument_restores_originals(
    otel: Otel, library: RetryLibrary, patched: list[tuple[Any, str]], untouched: Sequence[tuple[Any, str]] = ()
) -> tuple[Flaky, Flaky]:
    """Each attribute in `patched` (an owner, class or module, and a name) is replaced while instrumented and is the
    very original again after ``uninstrument()``; each one in `untouched` is never replaced. A function retried while
    instrumented, and one retried after, then record nothing. Returns those two functions."""
    before = {(owner, name): vars(owner)[name] for owner, name in [*patched, *untouched]}
    library.instrumentor().instrument(**otel.kwargs())
    decorated = Flaky(1)
    retried = library.retry(decorated, 2)
    retried()  # something recorded: the hooks that wait for a first recorded call are in
    assert otel.spans() != []
    assert all(vars(owner)[name] is not before[(owner, name)] for owner, name in patched)
    assert all(vars(owner)[name] is before[(owner, name)] for owner, name in untouched)
    library.instrumentor().uninstrument()
    assert all(vars(owner)[name] is before[(owner, name)] for owner, name in [*patched, *untouched])
    otel.exporter.clear()
    decorated.calls = 0
    retried()
    fresh = Flaky(1)
    library.retry(fresh, 2)()
    assert otel.spans() == []
    return decorated, fresh
