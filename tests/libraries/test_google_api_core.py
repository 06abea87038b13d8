"""google-api-core against the contract (real SDK, in-memory exporter), with no service: the real retry objects around
real callables and generators, and a generated-client method (``gapic_v1.method.wrap_method``, a ``_GapicCallable``)
around a fake transport callable shaped like a gRPC stub. Time is fake (`tests.support.google_support.FakeTime`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import importlib
from types import ModuleType

import google.api_core.retry
import pytest
from google.api_core import exceptions, gapic_v1
from google.api_core.retry import (
    AsyncRetry,
    AsyncStreamingRetry,
    Retry,
    StreamingRetry,
    if_exception_type,
    retry_streaming,
    retry_unary,
)
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from otel_resilience import semconv
from otel_resilience.instrumentation.google_api_core import GoogleApiCoreInstrumentor
from tests.conftest import Otel, instrumented_fixture
from tests.support.google_support import FakeTime
from tests.support.retry_support import Flaky, exception_events, metric_summary, operation_and_attempts

instrumented = instrumented_fixture(GoogleApiCoreInstrumentor)
TRANSIENT = if_exception_type(exceptions.ServiceUnavailable)
RPC = "/google.pubsub.v1.Publisher/Publish"


def legacy_retry_async() -> ModuleType | None:
    """``google.api_core.retry_async`` (the legacy name of AsyncRetry's module), where the version has it."""
    try:
        return importlib.import_module("google.api_core.retry_async")
    except ImportError:
        return None


@pytest.fixture(autouse=True)
def fake_time() -> Iterator[FakeTime]:
    with FakeTime(seed=7).installed() as fake:
        yield fake


def unavailable(failures: int, value: Any = "ok") -> Flaky:
    return Flaky(failures, value, exceptions.ServiceUnavailable)


# --- unary ------------------------------------------------------------------------------------------------------------


def test_retry_fails_twice_then_succeeds(instrumented: Otel, fake_time: FakeTime) -> None:
    flaky = unavailable(2, "user")

    @Retry(predicate=TRANSIENT, initial=0.5, maximum=4.0)
    def fetch_user(user_id: int) -> str:
        return flaky(user_id)

    assert fetch_user(1) == "user"
    op, attempts = operation_and_attempts(instrumented, "test_retry_fails_twice_then_succeeds.<locals>.fetch_user")
    assert flaky.calls == 3 and len(fake_time.sleeps) == 2
    assert dict(op.attributes) == {
        semconv.RETRY_NAME: f"{__name__}.test_retry_fails_twice_then_succeeds.<locals>.fetch_user",
        semconv.RETRY_DEPTH: 1,
        semconv.RETRY_ATTEMPTS: 3,
        semconv.RETRY_RESULT: semconv.RESULT_SUCCESS,
        semconv.RETRY_TOTAL_DELAY: pytest.approx(sum(fake_time.sleeps)),
    }
    # The waits are the ones the library drew from its (jittered) sleep generator and slept.
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [*fake_time.sleeps, None]
    assert [a.attributes.get(semconv.ERROR_TYPE) for a in attempts] == [
        "google.api_core.exceptions.ServiceUnavailable"
    ] * 2 + [None]
    assert [a.status.status_code for a in attempts] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert [e[semconv.EXCEPTION_MESSAGE] for a in attempts[:2] for e in exception_events(a)] == [
        "503 down 1", "503 down 2"
    ]
    assert op.status.status_code is StatusCode.UNSET
    assert metric_summary(instrumented, semconv.METRIC_RETRY_ATTEMPTS) == [
        ({semconv.RETRY_NAME: op.attributes[semconv.RETRY_NAME], semconv.RETRY_RESULT: "success",
          semconv.RETRY_DEPTH: 1}, 1, 3)
    ]


def test_a_deadline_that_ends_it_is_exhausted_with_the_reason(instrumented: Otel, fake_time: FakeTime) -> None:
    def slow_and_down() -> None:
        fake_time.now += 4.0  # each attempt costs four (fake) seconds
        raise exceptions.ServiceUnavailable("down")

    with pytest.raises(exceptions.RetryError) as caught:
        Retry(predicate=TRANSIENT, initial=1.0, maximum=1.0, multiplier=1.0, timeout=10.0)(slow_and_down)()
    op, attempts = operation_and_attempts(instrumented, "test_a_deadline_that_ends_it_is_exhausted_with_the_reason.<locals>.slow_and_down")
    assert op.attributes[semconv.RETRY_RESULT] == semconv.RESULT_EXHAUSTED
    assert op.attributes[semconv.RETRY_STOP_REASON] == semconv.STOP_REASON_TIMEOUT
    assert op.attributes[semconv.ERROR_TYPE] == "google.api_core.exceptions.RetryError"
    assert op.status.status_code is StatusCode.ERROR
    assert len(attempts) == len(fake_time.sleeps) + 1 == 3
    # The library drew a third wait, then found it would pass the deadline: the last attempt has no delay.
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [*fake_time.sleeps, None]
    assert caught.value.cause is not None


def test_an_error_the_predicate_does_not_retry_is_not_retried(instrumented: Otel) -> None:
    def missing() -> None:
        raise exceptions.NotFound("no such topic")

    with pytest.raises(exceptions.NotFound):
        Retry(predicate=TRANSIENT)(missing)()
    op, attempts = operation_and_attempts(instrumented, "test_an_error_the_predicate_does_not_retry_is_not_retried.<locals>.missing")
    assert op.attributes[semconv.RETRY_RESULT] == semconv.RESULT_NOT_RETRIED
    assert semconv.RETRY_STOP_REASON not in op.attributes
    assert op.attributes[semconv.ERROR_TYPE] == "google.api_core.exceptions.NotFound"
    assert len(attempts) == 1


def test_decorated_before_instrumenting_and_the_package_reexports(otel: Otel) -> None:
    flaky = unavailable(1)
    decorated = Retry(predicate=TRANSIENT)(flaky)
    GoogleApiCoreInstrumentor().instrument(**otel.kwargs())
    try:
        assert decorated() == "ok"
        again = unavailable(1)
        assert google.api_core.retry.retry_target(again, TRANSIENT, iter([0.25, 0.5]), timeout=None) == "ok"
    finally:
        GoogleApiCoreInstrumentor().uninstrument()
    ops = [s for s in otel.spans() if s.name == "retry Flaky"]
    assert [s.attributes[semconv.RETRY_ATTEMPTS] for s in ops] == [2, 2]
    assert [s.attributes[semconv.RETRY_TOTAL_DELAY] for s in ops][1] == 0.25


def test_async_retry(instrumented: Otel, fake_time: FakeTime) -> None:
    flaky = unavailable(1, "user")

    @AsyncRetry(predicate=TRANSIENT, initial=0.5)
    async def fetch_user() -> str:
        await asyncio.sleep(0)
        return flaky()

    assert asyncio.run(fetch_user()) == "user"
    op, attempts = operation_and_attempts(instrumented, "test_async_retry.<locals>.fetch_user")
    assert op.attributes[semconv.RETRY_RESULT] == semconv.RESULT_SUCCESS
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [*fake_time.sleeps, None]


def test_the_attempt_span_is_current_while_the_attempt_runs(instrumented: Otel) -> None:
    seen: list[int] = []
    flaky = unavailable(1)

    def fetch() -> str:
        seen.append(trace.get_current_span().get_span_context().span_id)
        return flaky()

    Retry(predicate=TRANSIENT)(fetch)()
    _, attempts = operation_and_attempts(instrumented, "test_the_attempt_span_is_current_while_the_attempt_runs.<locals>.fetch")
    assert seen == [a.context.span_id for a in attempts]


# --- generated clients --------------------------------------------------------------------------------------------------


class FakeStub:
    """A gRPC unary-unary stub as a generated transport holds it: called with the request, its path in ``_method``."""

    def __init__(self, failures: int, path: str = RPC) -> None:
        self._method = path.encode()
        self.flaky = unavailable(failures, "published")
        self.calls: list[tuple[Any, Any]] = []

    def __call__(self, request: Any, timeout: Any = None, metadata: Any = None) -> Any:
        self.calls.append((request, timeout))
        return self.flaky()


def test_a_generated_client_method_is_named_by_its_rpc(instrumented: Otel) -> None:
    stub = FakeStub(2)
    publish = gapic_v1.method.wrap_method(stub, default_retry=Retry(predicate=TRANSIENT), default_timeout=30.0)
    assert publish({"topic": "t"}) == "published"
    op, attempts = operation_and_attempts(instrumented, "Publisher/Publish")
    assert op.attributes[semconv.RETRY_NAME] == "google.pubsub.v1.Publisher/Publish"
    assert [a.attributes[semconv.RETRY_NAME] for a in attempts] == ["google.pubsub.v1.Publisher/Publish"] * 3
    assert len(stub.calls) == 3


def test_a_generated_client_method_without_a_stub_path_is_named_by_the_transport_function(instrumented: Otel) -> None:
    flaky = unavailable(1)

    def list_topics(request: Any, timeout: Any = None, metadata: Any = None) -> Any:
        return flaky()

    gapic_v1.method.wrap_method(list_topics, default_retry=Retry(predicate=TRANSIENT))({})
    op, _ = operation_and_attempts(
        instrumented, "test_a_generated_client_method_without_a_stub_path_is_named_by_the_transport_function.<locals>.list_topics"
    )
    assert op.attributes[semconv.RETRY_ATTEMPTS] == 2


def test_an_async_generated_client_method(instrumented: Otel) -> None:
    stub = FakeStub(1)

    class AsyncStub:
        _method = stub._method

        async def __call__(self, request: Any, timeout: Any = None, metadata: Any = None) -> Any:
            return stub(request, timeout)

    publish = gapic_v1.method_async.wrap_method(AsyncStub(), default_retry=AsyncRetry(predicate=TRANSIENT))
    assert asyncio.run(publish({})) == "published"
    op, attempts = operation_and_attempts(instrumented, "Publisher/Publish")
    assert (op.attributes[semconv.RETRY_ATTEMPTS], len(attempts)) == (2, 2)


def test_a_retry_inside_an_rpc_attempt_is_not_named_by_the_rpc(instrumented: Otel) -> None:
    inner = unavailable(1)

    def transport(request: Any, timeout: Any = None, metadata: Any = None) -> Any:
        return Retry(predicate=TRANSIENT)(inner)()

    transport._method = RPC  # type: ignore[attr-defined]
    gapic_v1.method.wrap_method(transport, default_retry=Retry(predicate=TRANSIENT))({})
    outer, (attempt,) = operation_and_attempts(instrumented, "Publisher/Publish")
    inner_op = instrumented.span("retry Flaky")
    assert inner_op.parent is not None and inner_op.parent.span_id == attempt.context.span_id
    assert inner_op.attributes[semconv.RETRY_DEPTH] == 2


def test_a_method_called_without_retry_lends_its_name_to_no_loop(instrumented: Otel) -> None:
    inner = unavailable(1)

    def transport(request: Any, timeout: Any = None, metadata: Any = None) -> Any:
        return Retry(predicate=TRANSIENT)(inner)()

    transport._method = RPC  # type: ignore[attr-defined]
    gapic_v1.method.wrap_method(transport, default_retry=Retry(predicate=TRANSIENT))({}, retry=None)
    assert [s.name for s in instrumented.spans() if s.name.startswith("retry ")] == ["retry Flaky"]


# --- streams ------------------------------------------------------------------------------------------------------------


class Streams:
    """Opens a stream per call: stream n yields its items, then fails with ServiceUnavailable while n < failures."""

    def __init__(self, failures: int, items: int = 2) -> None:
        self.failures = failures
        self.items = items
        self.opened = 0

    def open(self, start: int = 0) -> Iterator[int]:
        self.opened += 1
        number = self.opened
        for item in range(start, start + self.items):
            yield item
        if number <= self.failures:
            raise exceptions.ServiceUnavailable(f"stream {number} broke")

    async def open_async(self, start: int = 0) -> AsyncIterator[int]:
        for item in self.open(start):
            await asyncio.sleep(0)
            yield item


def test_a_streaming_retry_reopens_the_stream_and_each_stream_is_an_attempt(instrumented: Otel, fake_time: FakeTime) -> None:
    streams = Streams(2)
    received = list(StreamingRetry(predicate=TRANSIENT, initial=0.5)(streams.open)(10))
    assert received == [10, 11] * 3 and streams.opened == 3
    op, attempts = operation_and_attempts(instrumented, "Streams.open")
    assert op.attributes[semconv.RETRY_RESULT] == semconv.RESULT_SUCCESS
    assert [a.attributes.get(semconv.ERROR_TYPE) for a in attempts] == [
        "google.api_core.exceptions.ServiceUnavailable"
    ] * 2 + [None]
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [*fake_time.sleeps, None]


def test_the_stream_operation_starts_when_consumed_and_is_parented_where_it_was_asked_for(instrumented: Otel) -> None:
    tracer = instrumented.tracer_provider.get_tracer("app")
    streams = Streams(0)
    with tracer.start_as_current_span("asked") as asked:
        stream = StreamingRetry(predicate=TRANSIENT)(streams.open)()
    assert streams.opened == 0 and [s.name for s in instrumented.spans()] == ["asked"]
    assert list(stream) == [0, 1]
    op, _ = operation_and_attempts(instrumented, "Streams.open")
    assert op.parent is not None and op.parent.span_id == asked.get_span_context().span_id


def test_a_stream_closed_early_by_its_consumer_succeeded(instrumented: Otel) -> None:
    streams = Streams(0, items=5)
    stream = StreamingRetry(predicate=TRANSIENT)(streams.open)()
    assert next(stream) == 0
    stream.close()
    op, (attempt,) = operation_and_attempts(instrumented, "Streams.open")
    assert op.attributes[semconv.RETRY_RESULT] == semconv.RESULT_SUCCESS
    assert attempt.status.status_code is StatusCode.UNSET


def test_an_async_streaming_retry(instrumented: Otel, fake_time: FakeTime) -> None:
    streams = Streams(1)

    async def consume() -> list[int]:
        stream = await AsyncStreamingRetry(predicate=TRANSIENT, initial=0.5)(streams.open_async)(3)
        return [item async for item in stream]

    assert asyncio.run(consume()) == [3, 4, 3, 4]
    op, attempts = operation_and_attempts(instrumented, "Streams.open_async")
    assert (op.attributes[semconv.RETRY_ATTEMPTS], op.attributes[semconv.RETRY_RESULT]) == (2, "success")
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [*fake_time.sleeps, None]


def test_uninstrument_restores_the_originals(otel: Otel) -> None:
    legacy = legacy_retry_async()
    before = (retry_unary.retry_target, retry_streaming.retry_target_stream, google.api_core.retry.retry_target,
              getattr(legacy, "retry_target", None), gapic_v1.method._GapicCallable.__call__)
    GoogleApiCoreInstrumentor().instrument(**otel.kwargs())
    assert retry_unary.retry_target is not before[0]
    assert google.api_core.retry.retry_target is not before[2]
    GoogleApiCoreInstrumentor().uninstrument()
    assert (retry_unary.retry_target, retry_streaming.retry_target_stream, google.api_core.retry.retry_target,
            getattr(legacy, "retry_target", None), gapic_v1.method._GapicCallable.__call__) == before
