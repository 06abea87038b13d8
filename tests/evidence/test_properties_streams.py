"""Zero behaviour change for retried streams, shown over random policies, random streams and random consumers.

Each example plays one script of streams (each opened stream yields some items, then ends, breaks with an error, or is
interrupted; opening itself may fail) against one retry loop, twice: bare, then instrumented. The consumer must see
the same items, the very same exception object (or the library's own error, with the same cause), the same number of
streams opened and the same waits. Then the spans must tell it: one attempt per stream opened, and the operation's
result as the contract says.

Loops: google-api-core's ``StreamingRetry`` (a generator opener), ``AsyncStreamingRetry`` (an async-generator opener,
an opener returning an awaitable of one, and a plain async iterator, which the library drives differently), and an
app's own generator helper driven through `otel_resilience.core.streams.StreamAttempts` directly, as the
drop-in targets will. Time is fake (`tests.support.google_support.FakeTime`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.api_core import exceptions
from google.api_core.retry import AsyncStreamingRetry, StreamingRetry, if_exception_type
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_resilience import semconv
from otel_resilience.core import Telemetry
from otel_resilience.core.errors import error_type
from otel_resilience.core.retry import ProxiedAttempts, RetryOperation
from otel_resilience.core.streams import StreamAttempts
from otel_resilience.instrumentation.google_api_core import GoogleApiCoreInstrumentor
from tests.conftest import Otel
from tests.support.evidence import PROPERTY_SETTINGS, children, describe, instrumented
from tests.support.google_support import FakeTime

ERRORS: tuple[type[Exception], ...] = (exceptions.ServiceUnavailable, exceptions.InternalServerError, ValueError)


@dataclass(frozen=True)
class Stream:
    items: int
    end: str  # "ok", "raise", "interrupt", or "open_error" (opening the stream fails)
    error: int  # index in ERRORS
    cost: float  # fake seconds the stream takes


streams_strategy = st.lists(
    st.builds(
        Stream,
        items=st.integers(0, 3),
        end=st.sampled_from(["raise", "raise", "ok", "raise", "open_error", "interrupt"]),
        error=st.integers(0, len(ERRORS) - 1),
        cost=st.sampled_from([0.0, 1.0, 5.0]),
    ),
    min_size=1,
    max_size=5,
)


@dataclass(frozen=True)
class Policy:
    retried: tuple[type[Exception], ...]
    timeout: float | None
    initial: float
    seed: int
    take: int | None  # the consumer stops after this many items (closing the stream), or reads to the end


policies = st.builds(
    Policy,
    retried=st.sets(st.sampled_from(ERRORS), min_size=1).map(tuple),
    timeout=st.sampled_from([None, 3.0, 12.0, 30.0]),
    initial=st.sampled_from([0.5, 1.0, 4.0]),
    seed=st.integers(0, 2**16),
    take=st.sampled_from([None, None, None, 1, 4]),
)


@dataclass
class Script:
    """The streams, opened in order (after the last, a stream of one item that ends)."""

    streams: list[Stream]
    time: FakeTime
    opened: int = 0
    raised: list[BaseException] = field(default_factory=list)

    def plan(self) -> Stream:
        index = self.opened
        self.opened += 1
        return self.streams[index] if index < len(self.streams) else Stream(1, "ok", 0, 0.0)

    def fail(self, stream: Stream) -> BaseException:
        exc: BaseException = KeyboardInterrupt("interrupted") if stream.end == "interrupt" else ERRORS[stream.error](
            f"stream {self.opened}"
        )
        self.raised.append(exc)
        return exc

    def open(self) -> Iterator[int]:
        stream = self.plan()
        if stream.end == "open_error":
            raise self.fail(stream)
        return self._run(stream, self.opened)

    def _run(self, stream: Stream, number: int) -> Iterator[int]:
        for item in range(stream.items):
            self.time.now += stream.cost / max(stream.items, 1)
            yield number * 10 + item
        if stream.end != "ok":
            raise self.fail(stream)

    def open_async_generator(self) -> AsyncIterator[int]:
        return self._async(self.open())

    async def open_awaitable(self) -> AsyncIterator[int]:
        await asyncio.sleep(0)
        return self._async(self.open())

    def open_async_iterator(self) -> AsyncIterator[int]:
        return _PlainAsyncIterator(self.open())

    async def _async(self, items: Iterator[int]) -> AsyncIterator[int]:
        for item in items:
            await asyncio.sleep(0)
            yield item


class _PlainAsyncIterator:
    """An async iterator that is not an async generator (no asend/athrow/aclose): the library drives it otherwise."""

    def __init__(self, items: Iterator[int]) -> None:
        self._items = items

    def __aiter__(self) -> _PlainAsyncIterator:
        return self

    async def __anext__(self) -> int:
        try:
            return next(self._items)
        except StopIteration:
            raise StopAsyncIteration from None


@dataclass
class Observed:
    items: list[int]
    escaped: BaseException | None
    script: Script
    sleeps: list[float]

    def comparable(self) -> tuple[Any, ...]:
        escaped = self.escaped
        cause = describe(getattr(escaped, "cause", None), self.script.raised) if escaped is not None else None
        return (self.items, describe(escaped, self.script.raised), cause, self.script.opened, self.sleeps)


def consume_sync(stream: Iterator[int], take: int | None) -> list[int]:
    items: list[int] = []
    for item in stream:
        items.append(item)
        if take is not None and len(items) >= take:
            stream.close()  # type: ignore[attr-defined]
            break
    return items


async def consume_async(stream: AsyncIterator[int], take: int | None) -> list[int]:
    items: list[int] = []
    async for item in stream:
        items.append(item)
        if take is not None and len(items) >= take:
            await stream.aclose()  # type: ignore[attr-defined]
            break
    return items


def app_helper(open_stream: Callable[[], Iterator[int]], retried: tuple[type[Exception], ...], attempts: int,
               sleep: Callable[[float], None]) -> Iterator[int]:
    """An app's own helper: re-creates the stream when it breaks with a retried error, up to `attempts` times."""
    for attempt in range(1, attempts + 1):
        try:
            yield from open_stream()
            return
        except retried:
            if attempt == attempts:
                raise
            sleep(0.5 * attempt)


def run_form(form: str, policy: Policy, script: Script, otel: Otel | None) -> list[int]:
    kwargs = {"predicate": if_exception_type(*policy.retried), "initial": policy.initial, "timeout": policy.timeout}
    if form == "sync":
        return consume_sync(StreamingRetry(**kwargs)(script.open)(), policy.take)
    if form == "helper":
        if otel is None:
            stream = app_helper(script.open, policy.retried, 4, script.time.sleep)
        else:  # what a drop-in target does: the helper gets a stand-in opener, the caller the observed consumption
            streams = StreamAttempts(lambda: _helper_operation(otel))
            stream = streams.consume(app_helper(streams.opener(script.open), policy.retried, 4, script.time.sleep))
        return consume_sync(stream, policy.take)
    opener = {"async_generator": script.open_async_generator, "awaitable": script.open_awaitable,
              "async_iterator": script.open_async_iterator}[form]

    async def run() -> list[int]:
        stream = await AsyncStreamingRetry(**kwargs)(opener)()
        return await consume_async(stream, policy.take)

    return asyncio.run(run())


def _helper_operation(otel: Otel) -> ProxiedAttempts | None:
    """The operation a drop-in target would start for the helper (its delays measured: it has no verdict hook)."""
    telemetry = Telemetry("targets", otel.tracer_provider, otel.meter_provider)
    op = RetryOperation.start(telemetry, "tests.app_helper", span_name="app_helper", measured_delays=True)
    return None if op is None else ProxiedAttempts(op)


def observe(form: str, policy: Policy, streams: list[Stream], otel: Otel | None) -> Observed:
    fake = FakeTime(policy.seed)
    script = Script(list(streams), fake)
    items: list[int] = []
    escaped: BaseException | None = None
    with fake.installed():
        try:
            items = run_form(form, policy, script, otel)
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt is one of the outcomes
            escaped = exc
    return Observed(items, escaped, script, fake.sleeps)


def expected_result(observed: Observed) -> str:
    escaped = observed.escaped
    if escaped is None:
        return semconv.RESULT_SUCCESS
    if not isinstance(escaped, Exception):
        return semconv.RESULT_ABORTED
    if isinstance(escaped, exceptions.RetryError):
        return semconv.RESULT_EXHAUSTED
    return semconv.RESULT_NOT_RETRIED


def check_spans(form: str, otel: Otel, observed: Observed) -> None:
    spans = otel.spans()
    (op,) = [s for s in spans if s.name.startswith("retry ")]
    attempts: list[ReadableSpan] = children(spans, op)
    assert len(spans) == 1 + len(attempts)
    assert op.attributes[semconv.RETRY_ATTEMPTS] == observed.script.opened == len(attempts)
    assert [a.attributes[semconv.RETRY_ATTEMPT] for a in attempts] == list(range(1, len(attempts) + 1))
    # A stream is re-opened only after the one before broke: every attempt but the last failed, with its error.
    raised = [error_type(e) for e in observed.script.raised]
    failed = [a.attributes.get(semconv.ERROR_TYPE) for a in attempts]
    assert failed[:-1] == raised[: len(attempts) - 1]
    assert all(a.status.status_code is StatusCode.ERROR for a in attempts[:-1])
    if observed.escaped is None:
        assert failed[-1] is None and attempts[-1].status.status_code is StatusCode.UNSET
    if form != "helper":  # the helper's own stop is not google's: its verdicts are measured, not read
        assert op.attributes[semconv.RETRY_RESULT] == expected_result(observed)
        delays = [a.attributes.get(semconv.RETRY_DELAY) for a in attempts]
        assert delays == [*observed.sleeps, None]
        if op.attributes[semconv.RETRY_RESULT] == semconv.RESULT_EXHAUSTED:
            assert op.attributes[semconv.RETRY_STOP_REASON] == semconv.STOP_REASON_TIMEOUT
    elif observed.escaped is None:
        assert op.attributes[semconv.RETRY_RESULT] == semconv.RESULT_SUCCESS
    if observed.escaped is not None and op.attributes[semconv.RETRY_RESULT] != semconv.RESULT_SUCCESS:
        assert op.attributes[semconv.ERROR_TYPE] == error_type(observed.escaped)


FORMS = ["sync", "async_generator", "awaitable", "async_iterator", "helper"]


@pytest.mark.parametrize("form", FORMS)
@PROPERTY_SETTINGS
@given(policy=policies, streams=streams_strategy)
def test_retried_streams_behave_identically_and_spans_tell_what_happened(
    form: str, policy: Policy, streams: list[Stream]
) -> None:
    bare = observe(form, policy, streams, None)
    with instrumented(GoogleApiCoreInstrumentor) as otel:
        traced = observe(form, policy, streams, otel)
    assert traced.comparable() == bare.comparable()
    check_spans(form, otel, traced)

