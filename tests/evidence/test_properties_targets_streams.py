"""Zero behaviour change for an app's own stream helpers named as targets, over random streams, random helpers and
random consumers.

Each example plays one script of streams (each created stream yields some items, then ends, breaks with a retried
error, breaks with one the helper does not retry, is interrupted, or fails to be created at all) against one helper
of `tests.targets._targets_streams` (a generator or async generator function, called with the stream's opener or decorating
it), read by one consumer (to the end, by ``send``, closing early, or throwing an error in), twice: bare, then
instrumented (and once more with every trace sampled out). The consumer must see the same items, the very same exception objects (with the same context), the
same number of streams created, the same values sent into them and the same waits. Then the spans must tell it: one
attempt per stream created, each broken stream's attempt failed with its error, the measured delays are the waits,
and the operation's result follows the targets' rule. Time is fake (the helper's waits move the core's clock).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import StatusCode

import tests.targets._targets_streams as app
from otel_resilience import semconv
from otel_resilience.core import retry as core_retry
from otel_resilience.core.errors import error_type
from otel_resilience.core import retry as proxied_attempts
from otel_resilience.targets import instrument_targets, uninstrument_targets
from tests.support._targets_support import Clock
from tests.conftest import Otel
from tests.support.evidence import PROPERTY_SETTINGS, children, describe, fresh_otel

ENDS = ["ok", "drop", "drop", "refused", "bad", "interrupt"]


@dataclass(frozen=True)
class Plan:
    items: int
    end: str  # one of ENDS: "drop"/"refused" raise a retried ConnectionError, "bad" a ValueError


plans = st.lists(st.builds(Plan, items=st.integers(0, 3), end=st.sampled_from(ENDS)), min_size=1, max_size=5)


@dataclass(frozen=True)
class Consumer:
    mode: str  # "read", "send", "close" (after `at` items) or "throw" (a retried TimeoutError in, after `at` items)
    at: int


consumers = st.builds(Consumer, mode=st.sampled_from(["read", "read", "send", "close", "throw"]), at=st.integers(1, 4))


@dataclass
class Script:
    plans: list[Plan]
    clock: Clock
    created: int = 0
    raised: list[BaseException] = field(default_factory=list)
    received: list[Any] = field(default_factory=list)

    def _plan(self) -> tuple[Plan, int]:
        self.created += 1
        plan = self.plans[self.created - 1] if self.created <= len(self.plans) else Plan(1, "ok")
        if plan.end == "refused":
            raise self.fail(plan)
        return plan, self.created

    def fail(self, plan: Plan) -> BaseException:
        exc: BaseException
        if plan.end == "interrupt":
            exc = KeyboardInterrupt(f"interrupted {self.created}")
        elif plan.end == "bad":
            exc = ValueError(f"bad {self.created}")
        else:
            exc = ConnectionError(f"{plan.end} {self.created}")
        self.raised.append(exc)
        return exc

    def thrown(self) -> BaseException:
        exc = TimeoutError(f"thrown after stream {self.created}")
        self.raised.append(exc)
        return exc

    def stream(self) -> Iterator[int]:
        plan, number = self._plan()
        return self._run(plan, number)

    def _run(self, plan: Plan, number: int) -> Iterator[int]:
        for index in range(plan.items):
            self.clock.now += 1_000_000  # reading takes (fake) time
            self.received.append((yield number * 10 + index))
        if plan.end != "ok":
            raise self.fail(plan)

    def astream(self) -> AsyncIterator[int]:
        plan, number = self._plan()
        return self._arun(plan, number)

    async def awaitable_stream(self) -> AsyncIterator[int]:
        await asyncio.sleep(0)
        return self.astream()

    async def _arun(self, plan: Plan, number: int) -> AsyncIterator[int]:
        for index in range(plan.items):
            await asyncio.sleep(0)
            self.clock.now += 1_000_000
            self.received.append((yield number * 10 + index))
        if plan.end != "ok":
            raise self.fail(plan)


def consume(stream: Any, consumer: Consumer, script: Script) -> list[int]:
    items: list[int] = []
    if consumer.mode == "send":
        try:
            items.append(next(stream))
            while True:
                items.append(stream.send(f"sent {len(items)}"))
        except StopIteration:
            return items
    for item in stream:
        items.append(item)
        if len(items) == consumer.at and consumer.mode == "close":
            stream.close()
            break
        if len(items) == consumer.at and consumer.mode == "throw":
            try:
                items.append(stream.throw(script.thrown()))
            except StopIteration:
                break
    return items


async def consume_async(stream: Any, consumer: Consumer, script: Script) -> list[int]:
    items: list[int] = []
    if consumer.mode == "send":
        try:
            items.append(await stream.__anext__())
            while True:
                items.append(await stream.asend(f"sent {len(items)}"))
        except StopAsyncIteration:
            return items
    async for item in stream:
        items.append(item)
        if len(items) == consumer.at and consumer.mode == "close":
            await stream.aclose()
            break
        if len(items) == consumer.at and consumer.mode == "throw":
            try:
                items.append(await stream.athrow(script.thrown()))
            except StopAsyncIteration:
                break
    return items


FORMS: dict[str, str] = {  # form: the target that traces it
    "call": "stream_with_retry",
    "decorator": "retry_stream[decorator]",
    "async_call": "astream_with_retry",
    "async_call_awaitable": "astream_with_retry",
    "async_decorator": "aretry_stream[decorator]",
}


def run_form(form: str, attempts: int, consumer: Consumer, script: Script) -> list[int]:
    if form == "call":
        return consume(app.stream_with_retry(script.stream, attempts=attempts, delay=0.5), consumer, script)
    if form == "decorator":

        @app.retry_stream(attempts=attempts, delay=0.5)
        def feed() -> Iterator[int]:
            return (yield from script.stream())

        return consume(feed(), consumer, script)

    async def run() -> list[int]:
        if form == "async_decorator":

            @app.aretry_stream(attempts=attempts, delay=0.5)
            async def afeed() -> AsyncIterator[int]:
                async for item in script.astream():
                    yield item

            return await consume_async(afeed(), consumer, script)
        opener: Callable[[], Any] = script.awaitable_stream if form == "async_call_awaitable" else script.astream
        return await consume_async(app.astream_with_retry(opener, attempts=attempts, delay=0.5), consumer, script)

    return asyncio.run(run())


@dataclass
class Observed:
    items: list[int]
    escaped: BaseException | None
    script: Script

    def comparable(self) -> tuple[Any, ...]:
        raised = self.script.raised
        escaped = self.escaped
        context = describe(escaped.__context__, raised) if escaped is not None else None
        return (self.items, describe(escaped, raised), context, self.script.created, self.script.received, self.script.clock.slept)


def observe(form: str, attempts: int, consumer: Consumer, plans: list[Plan], otel: Otel | None) -> Observed:
    clock = Clock()
    script = Script(list(plans), clock)
    items: list[int] = []
    escaped: BaseException | None = None
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(app, "sleep", clock.sleep))
        stack.enter_context(mock.patch.object(app, "async_sleep", clock.async_sleep))
        stack.enter_context(mock.patch.object(core_retry, "time_ns", clock.time_ns))
        stack.enter_context(mock.patch.object(proxied_attempts, "time_ns", clock.time_ns))
        if otel is not None:
            instrument_targets([f"{app.__name__}:{FORMS[form]}"], **otel.kwargs())
            stack.callback(uninstrument_targets)
        try:
            items = run_form(form, attempts, consumer, script)
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt is one of the outcomes
            escaped = exc
    return Observed(items, escaped, script)


def check_spans(form: str, consumer: Consumer, otel: Otel, observed: Observed) -> None:
    spans = otel.spans()
    (op,) = [s for s in spans if s.name.startswith("retry ")]
    attempts = children(spans, op)
    assert len(spans) == 1 + len(attempts)
    assert op.attributes[semconv.RETRY_ATTEMPTS] == observed.script.created == len(attempts)
    assert [a.attributes[semconv.RETRY_ATTEMPT] for a in attempts] == list(range(1, len(attempts) + 1))
    escaped = observed.escaped
    if escaped is None:
        expected = semconv.RESULT_SUCCESS
    else:
        expected = semconv.RESULT_EXHAUSTED if isinstance(escaped, Exception) else semconv.RESULT_ABORTED
        assert op.attributes[semconv.ERROR_TYPE] == error_type(escaped)
    assert op.attributes[semconv.RETRY_RESULT] == expected
    # The last attempt is the stream the consumption ended in: failed with what escaped, if anything did.
    last = attempts[-1].attributes.get(semconv.ERROR_TYPE)
    assert last == (None if escaped is None else error_type(escaped))
    if form.startswith("async") and consumer.mode == "throw":
        return  # an error thrown into an async helper lands in the helper, not in its stream (no `yield from`)
    # Every other stream broke, in the order the errors were raised, and the wait after it is its measured delay.
    failed = [a.attributes.get(semconv.ERROR_TYPE) for a in attempts[:-1]]
    assert failed == [error_type(e) for e in observed.script.raised[: len(attempts) - 1]]
    assert all(a.status.status_code is StatusCode.ERROR for a in attempts[:-1])
    delays = [a.attributes.get(semconv.RETRY_DELAY) for a in attempts]
    assert delays == [pytest.approx(s) for s in observed.script.clock.slept] + [None]


@pytest.mark.parametrize("form", list(FORMS))
@PROPERTY_SETTINGS
@given(plans=plans, attempts=st.integers(1, 4), consumer=consumers)
def test_stream_helpers_behave_identically_and_spans_tell_what_happened(
    form: str, plans: list[Plan], attempts: int, consumer: Consumer
) -> None:
    bare = observe(form, attempts, consumer, plans, None)
    otel, sampled_out = fresh_otel(), fresh_otel()
    sampled_out.tracer_provider = TracerProvider(sampler=ALWAYS_OFF)
    sampled_out.tracer_provider.add_span_processor(SimpleSpanProcessor(sampled_out.exporter))
    try:
        traced = observe(form, attempts, consumer, plans, otel)
        assert traced.comparable() == bare.comparable()
        check_spans(form, consumer, otel, traced)
        # Sampled out: the operation's spans do not record (its metrics still do), the app sees the same.
        assert observe(form, attempts, consumer, plans, sampled_out).comparable() == bare.comparable()
        assert sampled_out.spans() == []
    finally:
        for providers in (otel, sampled_out):
            providers.tracer_provider.shutdown()
            providers.meter_provider.shutdown()
