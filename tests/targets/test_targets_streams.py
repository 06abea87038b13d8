"""An app's own stream helpers named as targets (generator and async generator functions that re-create a stream
when it breaks): the operation is the consumption, each stream created is an attempt, an error mid-stream is that
attempt's failure, and the delay between attempts is measured. Exact spans against the real SDK; the core's clock
moves only with the app's (fake) sleeps, so measured delays are exact."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from otel_resilience import semconv
from otel_resilience.core import retry as proxied_attempts
from tests.support._targets_support import AppModules, Clock, Instrument, apps, clock, targets, use_clock
from tests.conftest import Otel
from tests.support.evidence import children

__all__ = ["apps", "clock", "targets"]  # fixtures

TEMPLATE = "_targets_streams.py"


class Streams:
    """Stream `n` (from 1) yields ``plans[n-1][0]`` items, then ends (``"ok"``), fails with a new ConnectionError
    (``"drop"``), or fails to open at all (``"refused"``); beyond the plans, one item then the end. Each stream makes
    a span of its own per item (``"produce"``), so where the attempt span is current shows."""

    def __init__(self, *plans: tuple[int, str], tracer: trace.Tracer | None = None) -> None:
        self.plans = list(plans)
        self.tracer = tracer
        self.created = 0
        self.raised: list[BaseException] = []

    def _plan(self) -> tuple[int, str, int]:
        self.created += 1
        items, end = self.plans[self.created - 1] if self.created <= len(self.plans) else (1, "ok")
        if end == "refused":
            self._fail("refused")
        return items, end, self.created

    def _fail(self, why: str) -> None:
        exc = ConnectionError(f"{why} {self.created}")
        self.raised.append(exc)
        raise exc

    def _item(self, number: int, index: int) -> int:
        if self.tracer is not None:
            with self.tracer.start_as_current_span("produce"):
                pass
        return number * 10 + index

    def stream(self) -> Iterator[int]:
        items, end, number = self._plan()
        return self._run(items, end, number)

    def _run(self, items: int, end: str, number: int) -> Iterator[int]:
        for index in range(items):
            yield self._item(number, index)
        if end == "drop":
            self._fail("dropped")

    def astream(self) -> AsyncIterator[int]:
        items, end, number = self._plan()
        return self._arun(items, end, number)

    async def _arun(self, items: int, end: str, number: int) -> AsyncIterator[int]:
        for index in range(items):
            yield self._item(number, index)
        if end == "drop":
            self._fail("dropped")


def attempts_of(otel: Otel, qualname: str) -> tuple[ReadableSpan, list[ReadableSpan]]:
    spans = otel.spans()
    (op,) = [s for s in spans if s.name == f"retry {qualname}"]
    attempts = [s for s in children(spans, op) if s.name == qualname]
    assert op.kind is SpanKind.INTERNAL
    assert [a.attributes[semconv.RETRY_ATTEMPT] for a in attempts] == list(range(1, len(attempts) + 1))
    return op, attempts


def outcome(op: ReadableSpan) -> tuple[Any, ...]:
    a = op.attributes
    return (a[semconv.RETRY_ATTEMPTS], a[semconv.RETRY_RESULT], a.get(semconv.ERROR_TYPE), pytest.approx(a[semconv.RETRY_TOTAL_DELAY]))


def attempt_view(attempt: ReadableSpan) -> tuple[Any, ...]:
    return (attempt.attributes.get(semconv.ERROR_TYPE), attempt.attributes.get(semconv.RETRY_DELAY), attempt.status.status_code)


FAILED = StatusCode.ERROR
OK = StatusCode.UNSET


@pytest.fixture
def app(apps: AppModules, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setattr(proxied_attempts, "time_ns", clock.time_ns)  # where a stream's attempt end is read
    return use_clock(apps.imported(TEMPLATE), clock)


# --- a generator helper, call style -----------------------------------------------------------------------------------


def test_three_streams_are_three_attempts_under_one_operation(otel: Otel, targets: Instrument, app: ModuleType, clock: Clock) -> None:
    targets(retry=[f"{app.__name__}:stream_with_retry"])
    tracer = otel.tracer_provider.get_tracer("app")
    streams = Streams((2, "drop"), (0, "refused"), (3, "ok"), tracer=tracer)
    with tracer.start_as_current_span("caller") as caller:
        stream = app.stream_with_retry(streams.stream)
        assert inspect.isgenerator(stream)
        clock.sleep(5.0)  # made, not yet consumed: the operation has not begun
        items = list(stream)

    assert items == [10, 11, 30, 31, 32] and streams.created == 3 and clock.slept == [5.0, 0.1, 0.2]
    op, attempts = attempts_of(otel, "Streams.stream")
    assert op.parent is not None and op.parent.span_id == caller.get_span_context().span_id
    assert op.attributes[semconv.RETRY_NAME] == f"{__name__}.Streams.stream"
    assert outcome(op) == (3, "success", None, 0.30000000000000004)
    assert op.start_time == 1_700_000_000_000_000_000 + 5_000_000_000  # when consumption began
    assert [attempt_view(a) for a in attempts] == [
        ("ConnectionError", pytest.approx(0.1), FAILED),  # broke mid-stream, after two items
        ("ConnectionError", pytest.approx(0.2), FAILED),  # refused at creation
        (None, None, OK),
    ]
    assert [e.attributes["exception.message"] for e in attempts[0].events] == ["dropped 1"]
    # Each item is produced while its stream's attempt is current.
    produced = [s for s in otel.spans() if s.name == "produce"]
    assert [p.parent.span_id for p in produced] == [attempts[i].context.span_id for i in (0, 0, 2, 2, 2)]  # type: ignore[union-attr]
    assert all(a.end_time <= op.end_time for a in attempts)  # type: ignore[operator]


def test_streams_that_keep_breaking_exhaust_and_the_same_error_escapes(otel: Otel, targets: Instrument, app: ModuleType) -> None:
    targets(retry=[f"{app.__name__}:stream_with_retry"])
    streams = Streams((1, "drop"), (2, "drop"), (1, "drop"))
    items: list[int] = []
    with pytest.raises(ConnectionError) as caught:
        for item in app.stream_with_retry(streams.stream):
            items.append(item)
    assert caught.value is streams.raised[-1] and items == [10, 20, 21, 30] and streams.created == 3

    op, attempts = attempts_of(otel, "Streams.stream")
    assert outcome(op) == (3, "exhausted", "ConnectionError", 0.30000000000000004)
    assert op.status.status_code is FAILED
    assert [attempt_view(a) for a in attempts] == [
        ("ConnectionError", pytest.approx(0.1), FAILED),
        ("ConnectionError", pytest.approx(0.2), FAILED),
        ("ConnectionError", None, FAILED),
    ]


def test_an_error_the_helper_does_not_retry_ends_the_first_attempt_and_the_operation(otel: Otel, targets: Instrument, app: ModuleType) -> None:
    targets(retry=[f"{app.__name__}:stream_with_retry"])
    boom = ValueError("bad row")

    def rows() -> Iterator[int]:
        yield 1
        raise boom

    with pytest.raises(ValueError) as caught:
        list(app.stream_with_retry(rows))
    assert caught.value is boom

    op, attempts = attempts_of(otel, "test_an_error_the_helper_does_not_retry_ends_the_first_attempt_and_the_operation.<locals>.rows")
    assert outcome(op) == (1, "exhausted", "ValueError", 0.0)
    assert [attempt_view(a) for a in attempts] == [("ValueError", None, FAILED)]


def test_a_consumer_that_stops_early_ends_a_successful_operation(otel: Otel, targets: Instrument, app: ModuleType) -> None:
    targets(retry=[f"{app.__name__}:stream_with_retry"])
    streams = Streams((1, "drop"), (5, "ok"))
    stream = app.stream_with_retry(streams.stream)
    assert [next(stream), next(stream), next(stream)] == [10, 20, 21]
    stream.close()
    assert streams.created == 2

    op, attempts = attempts_of(otel, "Streams.stream")
    assert outcome(op) == (2, "success", None, 0.1)
    assert [attempt_view(a) for a in attempts] == [("ConnectionError", pytest.approx(0.1), FAILED), (None, None, OK)]


def test_send_and_throw_reach_the_stream(otel: Otel, targets: Instrument, app: ModuleType) -> None:
    """``yield from`` in the helper hands sends and throws to the stream: a throw is an error mid-stream there."""
    targets(retry=[f"{app.__name__}:stream_with_retry"])
    received: list[Any] = []
    created: list[int] = []
    thrown = TimeoutError("consumer gave up on this one")

    def echo() -> Iterator[int]:
        created.append(1)
        while True:
            received.append((yield len(received)))

    stream = app.stream_with_retry(echo)
    assert next(stream) == 0
    assert stream.send("a") == 1
    assert stream.throw(thrown) == 1  # the helper retried: a new stream's first item
    assert stream.send("b") == 2
    stream.close()
    assert received == ["a", "b"] and len(created) == 2

    op, attempts = attempts_of(otel, "test_send_and_throw_reach_the_stream.<locals>.echo")
    assert outcome(op) == (2, "success", None, 0.1)
    assert [attempt_view(a) for a in attempts] == [("TimeoutError", pytest.approx(0.1), FAILED), (None, None, OK)]


def test_a_value_that_is_not_a_stream_is_handed_back_as_it_is(otel: Otel, targets: Instrument, app: ModuleType) -> None:
    """A list is returned untouched (the helper may index it): its attempt ended when the callable returned."""
    targets(retry=[f"{app.__name__}:stream_with_retry"])
    rows = [1, 2]
    seen: list[Any] = []

    def listing() -> list[int]:
        seen.append(rows)
        return rows

    assert list(app.stream_with_retry(listing)) == [1, 2]
    op, attempts = attempts_of(otel, "test_a_value_that_is_not_a_stream_is_handed_back_as_it_is.<locals>.listing")
    assert outcome(op) == (1, "success", None, 0.0)
    assert [attempt_view(a) for a in attempts] == [(None, None, OK)]


def test_nothing_recording_leaves_the_stream_alone(app: ModuleType) -> None:
    """Targets patched with no SDK: the helper is called as it is, its generator handed back."""
    from otel_resilience.targets import instrument_targets, uninstrument_targets

    instrument_targets([f"{app.__name__}:stream_with_retry"])
    try:
        streams = Streams((1, "drop"))
        assert list(app.stream_with_retry(streams.stream)) == [10, 20] and streams.created == 2
    finally:
        uninstrument_targets()


# --- an async generator helper, call style ----------------------------------------------------------------------------


async def test_async_generator_helper(otel: Otel, targets: Instrument, app: ModuleType, clock: Clock) -> None:
    targets(retry=[f"{app.__name__}:astream_with_retry"])
    tracer = otel.tracer_provider.get_tracer("app")
    streams = Streams((2, "drop"), (0, "refused"), (3, "ok"), tracer=tracer)
    with tracer.start_as_current_span("caller") as caller:
        stream = app.astream_with_retry(streams.astream)
        assert inspect.isasyncgen(stream)
        items = [item async for item in stream]

    assert items == [10, 11, 30, 31, 32] and streams.created == 3 and clock.slept == [0.1, 0.2]
    op, attempts = attempts_of(otel, "Streams.astream")
    assert op.parent is not None and op.parent.span_id == caller.get_span_context().span_id
    assert outcome(op) == (3, "success", None, 0.30000000000000004)
    assert [attempt_view(a) for a in attempts] == [
        ("ConnectionError", pytest.approx(0.1), FAILED),
        ("ConnectionError", pytest.approx(0.2), FAILED),
        (None, None, OK),
    ]
    produced = [s for s in otel.spans() if s.name == "produce"]
    assert [p.parent.span_id for p in produced] == [attempts[i].context.span_id for i in (0, 0, 2, 2, 2)]  # type: ignore[union-attr]


async def test_async_generator_helper_with_an_opener_returning_an_awaitable(otel: Otel, targets: Instrument, app: ModuleType) -> None:
    targets(retry=[f"{app.__name__}:astream_with_retry"])
    streams = Streams((1, "drop"), (1, "drop"), (1, "drop"))

    async def connect() -> AsyncIterator[int]:
        return streams.astream()

    items: list[int] = []
    with pytest.raises(ConnectionError) as caught:
        async for item in app.astream_with_retry(connect):
            items.append(item)
    assert caught.value is streams.raised[-1] and items == [10, 20, 30]
    op, attempts = attempts_of(otel, "test_async_generator_helper_with_an_opener_returning_an_awaitable.<locals>.connect")
    assert outcome(op) == (3, "exhausted", "ConnectionError", 0.30000000000000004)
    assert [attempt_view(a)[0] for a in attempts] == ["ConnectionError"] * 3


async def test_async_consumer_that_stops_early(otel: Otel, targets: Instrument, app: ModuleType) -> None:
    targets(retry=[f"{app.__name__}:astream_with_retry"])
    streams = Streams((4, "ok"))
    stream = app.astream_with_retry(streams.astream)
    assert await stream.__anext__() == 10
    await stream.aclose()
    op, attempts = attempts_of(otel, "Streams.astream")
    assert outcome(op) == (1, "success", None, 0.0)
    assert [attempt_view(a) for a in attempts] == [(None, None, OK)]


async def test_async_keyboard_interrupt_mid_stream_aborts(otel: Otel, targets: Instrument, app: ModuleType) -> None:
    targets(retry=[f"{app.__name__}:astream_with_retry"])
    stop = KeyboardInterrupt()

    async def feed() -> AsyncIterator[int]:
        yield 1
        raise stop

    with pytest.raises(KeyboardInterrupt) as caught:
        [item async for item in app.astream_with_retry(feed)]
    assert caught.value is stop
    op, attempts = attempts_of(otel, "test_async_keyboard_interrupt_mid_stream_aborts.<locals>.feed")
    assert outcome(op)[:2] == (1, "aborted")
    assert [attempt_view(a)[0] for a in attempts] == ["KeyboardInterrupt"]


# --- decorator style ----------------------------------------------------------------------------------------------------


def test_decorated_generator_function(otel: Otel, targets: Instrument, app: ModuleType, clock: Clock) -> None:
    targets(retry=[f"{app.__name__}:retry_stream[decorator]"])
    streams = Streams((2, "drop"), (0, "refused"), (3, "ok"))

    @app.retry_stream(attempts=3, delay=0.1)
    def feed() -> Iterator[int]:
        return (yield from streams.stream())

    assert inspect.isgeneratorfunction(feed) and feed.__name__ == "feed"
    assert list(feed()) == [10, 11, 30, 31, 32] and streams.created == 3
    op, attempts = attempts_of(otel, "test_decorated_generator_function.<locals>.feed")
    assert outcome(op) == (3, "success", None, 0.30000000000000004)
    assert [attempt_view(a) for a in attempts] == [
        ("ConnectionError", pytest.approx(0.1), FAILED),
        ("ConnectionError", pytest.approx(0.2), FAILED),
        (None, None, OK),
    ]


def test_two_consumptions_of_one_decorated_function_interleaved(otel: Otel, targets: Instrument, app: ModuleType) -> None:
    """Each consumption finds its own operation, even when the two are read in turns in one thread."""
    targets(retry=[f"{app.__name__}:retry_stream[decorator]"])
    first, second = Streams((1, "drop"), (2, "ok")), Streams((3, "ok"))

    @app.retry_stream(attempts=3)
    def feed(streams: Streams) -> Iterator[int]:
        yield from streams.stream()

    a, b = feed(first), feed(second)
    assert [next(a), next(b), next(a), next(b), next(a), next(b)] == [10, 10, 20, 11, 21, 12]
    assert list(a) == [] and list(b) == []
    ops = sorted((s for s in otel.spans() if s.name.startswith("retry ")), key=lambda s: s.start_time or 0)
    assert [op.attributes[semconv.RETRY_ATTEMPTS] for op in ops] == [2, 1]
    assert [len(children(otel.spans(), op)) for op in ops] == [2, 1]


async def test_decorated_async_generator_function(otel: Otel, targets: Instrument, app: ModuleType, clock: Clock) -> None:
    targets(retry=[f"{app.__name__}:aretry_stream[decorator]"])
    streams = Streams((2, "drop"), (1, "drop"), (1, "drop"))

    @app.aretry_stream(attempts=3, delay=0.1)
    async def feed() -> AsyncIterator[int]:
        async for item in streams.astream():
            yield item

    items: list[int] = []
    with pytest.raises(ConnectionError) as caught:
        async for item in feed():
            items.append(item)
    assert caught.value is streams.raised[-1] and items == [10, 11, 20, 30] and clock.slept == [0.1, 0.2]
    op, attempts = attempts_of(otel, "test_decorated_async_generator_function.<locals>.feed")
    assert outcome(op) == (3, "exhausted", "ConnectionError", 0.30000000000000004)
    assert [attempt_view(a) for a in attempts] == [
        ("ConnectionError", pytest.approx(0.1), FAILED),
        ("ConnectionError", pytest.approx(0.2), FAILED),
        ("ConnectionError", None, FAILED),
    ]
