"""Sampled-out calls (core/sampling.py): under ``ParentBased(TraceIdRatioBased(0.01))`` and a parent that was not
sampled, an instrumented call records no span, exactly the metric points the same calls record when they are sampled,
and an outgoing request inside it carries the caller's trace id with the sampled flag off. Samplers whose decision
cannot be known in advance are asked: their spans are created, and recorded when they say so."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import aiobreaker
import backoff
import circuitbreaker
import pybreaker
import pytest
import requests
import retrying
import stamina
import tenacity
from opentelemetry import trace
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from purgatory import SyncCircuitBreakerFactory

from otel_resilience import semconv
from otel_resilience.core.sampling import unsampled_parents_dropped
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.aiobreaker import AioBreakerInstrumentor
from otel_resilience.instrumentation.backoff import BackoffInstrumentor
from otel_resilience.instrumentation.circuitbreaker import CircuitBreakerInstrumentor
from otel_resilience.instrumentation.purgatory import PurgatoryInstrumentor
from otel_resilience.instrumentation.pybreaker import PyBreakerInstrumentor
from otel_resilience.instrumentation.retrying import RetryingInstrumentor
from otel_resilience.instrumentation.stamina import StaminaInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from tests.conftest import Otel
from tests.support.evidence import forget_circuitbreaker
from tests.support.http_support import ScriptedServer, server  # noqa: F401 - the fixture
from tests.support.retry_support import AsyncFlaky, Flaky, Sleeps

PRODUCTION = ParentBased(TraceIdRatioBased(0.01))
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
NOT_SAMPLED = trace.TraceFlags(trace.TraceFlags.DEFAULT)
SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)


def _parent(flags: trace.TraceFlags, *, remote: bool) -> trace.Span:
    """The app's request span as the SDK leaves it: an incoming traceparent (remote) or its own dropped root (local)."""
    return trace.NonRecordingSpan(trace.SpanContext(TRACE_ID, 0x00F067AA0BA902B7, is_remote=remote, trace_flags=flags))


@contextmanager
def providers(sampler: Sampler) -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=sampler)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    try:
        yield Otel(tracer_provider, meter_provider, exporter, reader)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()


@contextmanager
def instrumented(instrumentor: type[ResilienceInstrumentor], otel: Otel) -> Iterator[None]:
    instrumentor().instrument(**otel.kwargs())
    try:
        yield
    finally:
        instrumentor().uninstrument()


# --- the calls: each library retries (or guards) a few calls that succeed, recover and fail -------------------------


def _tenacity() -> None:
    retried = tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(0.1), sleep=Sleeps().sleep)
    for failures in (0, 2, 5):
        try:
            retried(Flaky(failures))()
        except tenacity.RetryError:
            pass
    for attempt in tenacity.Retrying(stop=tenacity.stop_after_attempt(2), sleep=Sleeps().sleep, reraise=True):
        with attempt:
            pass


def _tenacity_async() -> None:
    async def main() -> None:
        for failures in (0, 2):
            await tenacity.AsyncRetrying(stop=tenacity.stop_after_attempt(3), sleep=Sleeps().async_sleep)(
                Flaky(failures).__call__
            )

    asyncio.run(main())


def _backoff() -> None:
    for failures in (0, 2, 5):
        retried = backoff.on_exception(backoff.constant, ConnectionError, interval=0, jitter=None, max_tries=3, logger=None)
        try:
            retried(Flaky(failures))()
        except ConnectionError:
            pass


def _backoff_async() -> None:
    async def main() -> None:
        for failures in (0, 2, 5):
            retried = backoff.on_exception(backoff.constant, ConnectionError, interval=0, jitter=None, max_tries=3, logger=None)
            try:
                await retried(AsyncFlaky(failures))()
            except ConnectionError:
                pass

    asyncio.run(main())


def _stamina() -> None:
    with stamina.set_testing(True, attempts=3):
        for failures in (0, 2):
            stamina.retry(on=ConnectionError, attempts=3)(Flaky(failures))()


def _stamina_async() -> None:
    async def main() -> None:
        with stamina.set_testing(True, attempts=3):
            for failures in (0, 2):
                flaky = AsyncFlaky(failures)

                async def call() -> Any:  # stamina tells a coroutine function by inspection; an instance is not one
                    return await flaky()

                await stamina.retry(on=ConnectionError, attempts=3)(call)()

    asyncio.run(main())


def _retrying() -> None:
    for failures in (0, 2):
        retrying.retry(stop_max_attempt_number=3, wait_fixed=0)(Flaky(failures))()


def _trip_and_refuse(call: Callable[[Callable[[], Any]], Any], refusal: type[BaseException]) -> None:
    """Two successes, two failures (the second trips the breaker), one refusal."""
    def fail() -> None:
        raise ConnectionError("down")

    for work in (lambda: "ok", lambda: "ok", fail, fail, lambda: "ok"):
        try:
            call(work)
        except (ConnectionError, refusal):
            pass


def _pybreaker() -> None:
    breaker = pybreaker.CircuitBreaker(fail_max=2, reset_timeout=3600, name="payments")
    _trip_and_refuse(breaker.call, pybreaker.CircuitBreakerError)


def _circuitbreaker() -> None:
    breaker = circuitbreaker.CircuitBreaker(failure_threshold=2, recovery_timeout=3600, name="payments")
    try:
        _trip_and_refuse(lambda work: breaker(work)(), circuitbreaker.CircuitBreakerError)
    finally:
        forget_circuitbreaker("payments")  # decorating registered it in circuitbreaker's process-wide monitor


def _aiobreaker() -> None:
    breaker = aiobreaker.CircuitBreaker(fail_max=2, timeout_duration=timedelta(hours=1), name="payments")
    _trip_and_refuse(breaker.call, aiobreaker.CircuitBreakerError)


def _purgatory() -> None:
    factory = SyncCircuitBreakerFactory(default_threshold=2, default_ttl=3600)

    def call(work: Callable[[], Any]) -> Any:
        with factory.get_breaker("payments"):
            return work()

    from purgatory.domain.model import OpenedState

    _trip_and_refuse(call, OpenedState)


LIBRARIES: dict[str, tuple[type[ResilienceInstrumentor], Callable[[], None]]] = {
    "tenacity": (TenacityInstrumentor, _tenacity),
    "tenacity async": (TenacityInstrumentor, _tenacity_async),
    "backoff": (BackoffInstrumentor, _backoff),
    "backoff async": (BackoffInstrumentor, _backoff_async),
    "stamina": (StaminaInstrumentor, _stamina),
    "stamina async": (StaminaInstrumentor, _stamina_async),
    "retrying": (RetryingInstrumentor, _retrying),
    "pybreaker": (PyBreakerInstrumentor, _pybreaker),
    "circuitbreaker": (CircuitBreakerInstrumentor, _circuitbreaker),
    "aiobreaker": (AioBreakerInstrumentor, _aiobreaker),
    "purgatory": (PurgatoryInstrumentor, _purgatory),
}


def _points(otel: Otel) -> list[tuple[Any, ...]]:
    """Every metric point but the state gauge's, in a form two runs can be compared in: its attributes, and its count
    and sum (histograms: a duration's sum only as a count, it is a time) or value (counters)."""
    data = otel.reader.get_metrics_data()
    assert data is not None
    points = []
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == semconv.METRIC_BREAKER_STATE:
                    continue
                for p in metric.data.data_points:
                    if hasattr(p, "count"):
                        figure: Any = (p.count, p.sum if metric.name == semconv.METRIC_RETRY_ATTEMPTS else None)
                    else:
                        figure = p.value
                    points.append((sm.scope.name, metric.name, sorted(p.attributes.items()), figure))
    return sorted(points, key=repr)


def _run(library: str, sampler: Sampler, parent: trace.Span) -> tuple[int, list[tuple[Any, ...]]]:
    instrumentor, calls = LIBRARIES[library]
    with providers(sampler) as otel, instrumented(instrumentor, otel), trace.use_span(parent):
        calls()
        return len(otel.spans()), _points(otel)


@pytest.mark.parametrize("remote", [True, False], ids=["incoming traceparent", "local root"])
@pytest.mark.parametrize("library", LIBRARIES)
def test_sampled_out_calls_record_no_span_and_the_same_metric_points(library: str, remote: bool) -> None:
    recorded_spans, recorded_points = _run(library, PRODUCTION, _parent(SAMPLED, remote=remote))
    sampled_out_spans, sampled_out_points = _run(library, PRODUCTION, _parent(NOT_SAMPLED, remote=remote))
    assert recorded_spans > 0 and recorded_points
    assert sampled_out_spans == 0
    assert sampled_out_points == recorded_points


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_sampled_out_root_operation_records_only_what_its_sampler_keeps(library: str) -> None:
    """No parent at all: the operation (or breaker) span is a root, and the ratio sampler decides for it (here it
    drops every root): nothing recorded, and the same points as under the default sampler, which records them."""
    _, recorded = _run(library, ParentBased(ALWAYS_ON), trace.INVALID_SPAN)
    spans, sampled_out = _run(library, ParentBased(TraceIdRatioBased(0.0)), trace.INVALID_SPAN)
    assert spans == 0 and sampled_out == recorded


def test_a_sampled_out_operation_is_counted_without_an_exemplar() -> None:
    """Its points are recorded in the operation's context, whose span is not sampled: the SDK's exemplar filter
    (trace-based) keeps no exemplar pointing at a trace nobody recorded."""
    with providers(PRODUCTION) as otel, instrumented(TenacityInstrumentor, otel), trace.use_span(
        _parent(NOT_SAMPLED, remote=True)
    ):
        tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none())(Flaky(1))()
        (point,) = otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS)
        assert (point.count, point.sum) == (1, 2) and not point.exemplars


# --- outgoing requests carry the sampled-out parent ---------------------------------------------------------------


def _traceparent(server: ScriptedServer, sampler: Sampler, flags: trace.TraceFlags, guard: str) -> str:
    """One request through contrib's requests instrumentation (which injects the context) made inside a tenacity
    attempt or a pybreaker call, under a parent with `flags`; the traceparent the server received."""
    with providers(sampler) as otel:
        RequestsInstrumentor().instrument(tracer_provider=otel.tracer_provider)
        try:
            with instrumented(TenacityInstrumentor, otel), instrumented(PyBreakerInstrumentor, otel):
                get = lambda: requests.get(server.url(), timeout=5).status_code  # noqa: E731
                with trace.use_span(_parent(flags, remote=True)):
                    if guard == "tenacity":
                        assert tenacity.retry(stop=tenacity.stop_after_attempt(2))(get)() == 200
                    else:
                        assert pybreaker.CircuitBreaker(name="payments").call(get) == 200
        finally:
            RequestsInstrumentor().uninstrument()
    (traceparent,) = server.traceparents()
    assert traceparent is not None
    return traceparent


@pytest.mark.parametrize("guard", ["tenacity", "pybreaker"])
@pytest.mark.parametrize(("flags", "expected"), [(NOT_SAMPLED, "00"), (SAMPLED, "01")], ids=["sampled out", "sampled"])
def test_a_request_inside_a_call_carries_the_caller_s_trace_and_sampled_flag(
    server: ScriptedServer,  # noqa: F811 - the fixture
    guard: str,
    flags: trace.TraceFlags,
    expected: str,
) -> None:
    """Sampled out, the request says so (flag 00) and belongs to the caller's trace; sampled, the contrast (01)."""
    version, trace_id, _span_id, sampled = _traceparent(server, PRODUCTION, flags, guard).split("-")
    assert (version, trace_id, sampled) == ("00", format(TRACE_ID, "032x"), expected)


# --- samplers whose decision is not known in advance: the spans are created -------------------------------------


class ByName(Sampler):
    """A custom sampler: records the spans whose name it is given, drops the others, whatever their parent."""

    def __init__(self, *names: str) -> None:
        self.names = names

    def should_sample(
        self, parent_context: Any, trace_id: int, name: str, kind: Any = None, attributes: Any = None, *args: Any
    ) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE if name in self.names else Decision.DROP, attributes)

    def get_description(self) -> str:
        return "ByName"


def _tenacity_spans(sampler: Sampler, parent: trace.Span) -> dict[str, list[dict[str, Any]]]:
    """Span name -> the attributes of each recorded span of a tenacity call that fails twice, then succeeds."""
    with providers(sampler) as otel, instrumented(TenacityInstrumentor, otel), trace.use_span(parent):
        work = Flaky(2)
        tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_fixed(0.1), sleep=Sleeps().sleep)(work)()
        spans: dict[str, list[dict[str, Any]]] = {}
        for span in otel.spans():
            spans.setdefault(span.name, []).append(dict(span.attributes or {}))
        return spans


def test_always_on_under_a_sampled_out_parent_records_every_span() -> None:
    spans = _tenacity_spans(ALWAYS_ON, _parent(NOT_SAMPLED, remote=True))
    assert len(spans["retry Flaky"]) == 1 and len(spans["Flaky"]) == 3


def test_a_ratio_sampler_alone_decides_by_trace_id_whatever_the_parent() -> None:
    """TraceIdRatioBased keeps a trace whose id falls under its bound, even below a parent that was not sampled: the
    spans are asked for, not skipped. (This trace id's low 64 bits are 0: under any bound.)"""
    kept_trace = trace.NonRecordingSpan(trace.SpanContext(1 << 64, 0x1, is_remote=True, trace_flags=NOT_SAMPLED))
    spans = _tenacity_spans(TraceIdRatioBased(0.01), kept_trace)
    assert len(spans["retry Flaky"]) == 1 and len(spans["Flaky"]) == 3


def test_a_custom_sampler_that_keeps_attempts_under_a_dropped_operation_gets_them_whole() -> None:
    spans = _tenacity_spans(ByName("Flaky"), _parent(NOT_SAMPLED, remote=True))
    assert "retry Flaky" not in spans
    attempts = sorted(spans["Flaky"], key=lambda a: a[semconv.RETRY_ATTEMPT])
    assert [a[semconv.RETRY_ATTEMPT] for a in attempts] == [1, 2, 3]
    assert [a.get(semconv.ERROR_TYPE) for a in attempts] == ["ConnectionError", "ConnectionError", None]
    assert [a.get(semconv.RETRY_DELAY) for a in attempts] == [0.1, 0.1, None]


def test_parent_based_that_keeps_children_of_unsampled_local_parents_gets_the_attempts() -> None:
    sampler = ParentBased(ALWAYS_ON, remote_parent_not_sampled=ALWAYS_OFF, local_parent_not_sampled=ALWAYS_ON)
    spans = _tenacity_spans(sampler, _parent(NOT_SAMPLED, remote=True))
    assert "retry Flaky" not in spans and len(spans["Flaky"]) == 3


def test_a_recording_parent_that_is_not_sampled_keeps_our_span_current() -> None:
    """A parent kept as RECORD_ONLY (recorded, not sampled) collects what the app adds to "the current span": inside
    a breaker call the current span must be the call's, not the app's, even though the call's span is dropped."""

    class RecordOnlyRoots(Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> SamplingResult:
            return SamplingResult(Decision.RECORD_ONLY if name == "request" else Decision.DROP)

        def get_description(self) -> str:
            return "RecordOnlyRoots"

    with providers(ParentBased(RecordOnlyRoots())) as otel, instrumented(PyBreakerInstrumentor, otel):
        with otel.tracer_provider.get_tracer("app").start_as_current_span("request") as request:
            assert request.is_recording() and not request.get_span_context().trace_flags.sampled
            current = pybreaker.CircuitBreaker(name="payments").call(trace.get_current_span)
        assert current is not request
        assert current.get_span_context().trace_id == request.get_span_context().trace_id


def test_only_the_sdk_s_own_samplers_are_known() -> None:
    tracer_provider = TracerProvider(sampler=PRODUCTION)
    assert unsampled_parents_dropped(tracer_provider.get_tracer("t")) == (True, True)
    assert unsampled_parents_dropped(TracerProvider(sampler=ALWAYS_OFF).get_tracer("t")) == (True, True)
    for sampler in (ALWAYS_ON, TraceIdRatioBased(0.01), ByName("x")):
        assert unsampled_parents_dropped(TracerProvider(sampler=sampler).get_tracer("t")) == (False, False)
    assert unsampled_parents_dropped(
        TracerProvider(sampler=ParentBased(ALWAYS_ON, local_parent_not_sampled=ByName())).get_tracer("t")
    ) == (False, True)

    class Overridden(ParentBased):
        def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
            return SamplingResult(Decision.RECORD_AND_SAMPLE)

    assert unsampled_parents_dropped(TracerProvider(sampler=Overridden(ALWAYS_OFF)).get_tracer("t")) == (False, False)
    assert unsampled_parents_dropped(trace.NoOpTracer()) == (False, False)


def test_when_the_sdk_counts_dropped_spans_they_are_all_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's opt-in internal metrics count every started span, dropped ones included: then nothing is skipped."""
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    tracer = TracerProvider(sampler=PRODUCTION, meter_provider=MeterProvider()).get_tracer("t")
    assert unsampled_parents_dropped(tracer) == (False, False)
