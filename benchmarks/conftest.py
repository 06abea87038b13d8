"""Benchmark fixtures. Every scenario is measured in several variants in the same run, and `report.py` turns them
into ratios (instrumented vs bare, and vs the same telemetry built by hand with the OpenTelemetry API), so the machine's
speed and noise cancel out as far as they can. Nothing here asserts on time.

Conventions: a benchmark sets ``benchmark.group`` to its scenario and ``benchmark.extra_info["variant"]`` to one of
``bare`` (the library alone, no OpenTelemetry), ``no_sdk`` (instrumented, no SDK configured), ``hand_built`` (the library
alone plus the same spans and metric points made by hand), ``instrumented`` (instrumented, with the same SDK set-up).

Those four run with every span recorded and a metrics SDK. Production services mostly run otherwise: in a module that
sets ``PRODUCTION_SETUPS_TOO = True``, every benchmark using `sdk` (so ``instrumented`` and ``hand_built``) also runs in
each set-up of `PRODUCTION_SETUPS`, its variant named with the set-up (``instrumented_traces``,
``hand_built_sampled_out``, …) when the test passes its `Sdk` to `variant`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import pytest
from opentelemetry import context, metrics, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, Status, StatusCode

from otel_resilience import semconv


class NullExporter(SpanExporter):
    """Takes every span and drops it: the SDK's processing cost is measured, not an exporter's I/O."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


PRODUCTION_SETUPS = {
    "traces": "every span recorded, no metrics SDK",
    "sampled_out": "ParentBased(TraceIdRatioBased(0.01)), the call inside a sampled-out request, no metrics SDK",
    "sampled_out_metrics": "as sampled_out, with a metrics SDK: the metric points are still recorded",
}
"""The set-ups beside the default one (every span recorded, a metrics SDK), by variant suffix."""

SAMPLED_OUT_REQUEST = trace.NonRecordingSpan(
    trace.SpanContext(0x5AB1ED0_0000_0000_0000_0000_0000_0001, 0x0000_0000_0000_0002, is_remote=False,
                      trace_flags=trace.TraceFlags(trace.TraceFlags.DEFAULT))
)
"""The app's request span that a 1% sampler dropped (what the SDK makes of it: a non-recording span, not sampled)."""


@dataclass
class Sdk:
    tracer_provider: TracerProvider
    meter_provider: metrics.MeterProvider
    setup: str = ""  # "" (every span recorded, a metrics SDK) or a key of PRODUCTION_SETUPS

    def kwargs(self) -> dict[str, object]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}


@contextmanager
def sdk_for_benchmarks(setup: str = "") -> Iterator[Sdk]:
    """The SDK every instrumented and hand-built variant uses: spans go through a SimpleSpanProcessor to an exporter
    that drops them, metric points to an in-memory reader. `setup` (a key of `PRODUCTION_SETUPS`): no metrics SDK
    (the API's no-op meter provider) unless it ends with ``_metrics``; ``sampled_out*``: the production sampler, and
    the block runs inside `SAMPLED_OUT_REQUEST`."""
    sampled_out = setup.startswith("sampled_out")
    tracer_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.01))) if sampled_out else TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(NullExporter()))
    with_metrics = setup in ("", "sampled_out_metrics")
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()]) if with_metrics else metrics.NoOpMeterProvider()
    token = context.attach(trace.set_span_in_context(SAMPLED_OUT_REQUEST)) if sampled_out else None
    try:
        yield Sdk(tracer_provider, meter_provider, setup)
    finally:
        if token is not None:
            context.detach(token)
        tracer_provider.shutdown()
        if isinstance(meter_provider, MeterProvider):
            meter_provider.shutdown()


@pytest.fixture
def sdk(request: pytest.FixtureRequest) -> Iterator[Sdk]:
    with sdk_for_benchmarks(getattr(request, "param", "")) as made:
        yield made


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`sdk` in the default set-up and each of `PRODUCTION_SETUPS`, for the modules that ask for them."""
    if "sdk" in metafunc.fixturenames and getattr(metafunc.module, "PRODUCTION_SETUPS_TOO", False):
        setups = ["", *PRODUCTION_SETUPS]
        metafunc.parametrize("sdk", setups, indirect=True, ids=[setup or "recorded" for setup in setups])


@contextmanager
def instrumenting(instrumentor: BaseInstrumentor, **kwargs: object) -> Iterator[None]:
    """`instrumentor` on for the block (with `kwargs`, e.g. ``Sdk.kwargs()``; none: the no-SDK path), off after."""
    instrumentor.instrument(**kwargs)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def instrumented_fixtures(
    instrumentor: Callable[[pytest.FixtureRequest], BaseInstrumentor],
) -> tuple[Callable[..., Iterator[Sdk]], Callable[..., Iterator[None]]]:
    """The ``instrumented`` (with the test's `sdk`) and ``instrumented_no_sdk`` (no SDK configured) fixtures of a
    benchmark module: `instrumentor(request)` gives the instrumentor for the test, uninstrumented afterwards. A module
    takes them as ``instrumented, instrumented_no_sdk = instrumented_fixtures(...)``."""

    @pytest.fixture
    def instrumented(request: pytest.FixtureRequest, sdk: Sdk) -> Iterator[Sdk]:
        with instrumenting(instrumentor(request), **sdk.kwargs()):
            yield sdk

    @pytest.fixture
    def instrumented_no_sdk(request: pytest.FixtureRequest) -> Iterator[None]:
        with instrumenting(instrumentor(request)):
            yield

    return instrumented, instrumented_no_sdk


def variant(benchmark: object, group: str, name: str, sdk: Sdk | None = None) -> None:
    """Name the benchmark: `group` is its scenario, `name` its variant, suffixed with `sdk`'s production set-up."""
    benchmark.group = group  # type: ignore[attr-defined]
    benchmark.extra_info["variant"] = f"{name}_{sdk.setup}" if sdk is not None and sdk.setup else name  # type: ignore[attr-defined]


def make_work(failures: int) -> Callable[[], str]:
    """A retried operation's work: each call fails (ConnectionError) `failures` times in a row, then succeeds."""
    state = {"n": 0}

    def fetch_user() -> str:
        state["n"] += 1
        if state["n"] % (failures + 1) != 0:
            raise ConnectionError("down")
        return "user"

    return fetch_user


class RetryFloor:
    """The telemetry our instrumentation gives one retried call, made by hand with the API: the operation span, each
    attempt's span and what a failed attempt adds to it, the operation's end attributes and its metric points. The
    `hand_built` variants of the sync (`hand_built_retry`) and async (`benchmarks.bench_async`) retry scenarios build
    it alike; only the awaiting differs. `name` and `qualname` are the retried function's; every failed attempt waits
    `wait` seconds (the library's sleep patched out)."""

    def __init__(self, sdk: Sdk, *, name: str, qualname: str, wait: float) -> None:
        self.tracer = sdk.tracer_provider.get_tracer("hand")
        meter = sdk.meter_provider.get_meter("hand")
        self.attempts_hist = meter.create_histogram(semconv.METRIC_RETRY_ATTEMPTS)
        self.duration_hist = meter.create_histogram(semconv.METRIC_RETRY_DURATION)
        self.name = name
        self.qualname = qualname
        self.wait = wait

    def operation(self) -> AbstractContextManager[Span]:
        return self.tracer.start_as_current_span(
            f"retry {self.qualname}",
            attributes={semconv.RETRY_NAME: self.name, semconv.RETRY_DEPTH: 1, semconv.RETRY_MAX_ATTEMPTS: 5},
        )

    def attempt(self, number: int) -> AbstractContextManager[Span]:
        return self.tracer.start_as_current_span(
            self.qualname,
            attributes={semconv.RETRY_NAME: self.name, semconv.RETRY_ATTEMPT: number},
            record_exception=False,
            set_status_on_exception=False,
        )

    def failed(self, span: Span, exc: ConnectionError) -> None:
        span.set_attributes({semconv.RETRY_DELAY: self.wait, semconv.ERROR_TYPE: "ConnectionError"})
        span.set_status(_ERROR)
        span.add_event("exception", {"exception.type": "ConnectionError", "exception.message": str(exc)})

    def succeeded(self, op: Span, attempts: int) -> Context:
        """The operation's end attributes; returns its context, where its points are recorded, as ours are (a
        sampled operation's points carry its exemplar)."""
        op.set_attributes({semconv.RETRY_ATTEMPTS: attempts, semconv.RETRY_RESULT: "success",
                           semconv.RETRY_TOTAL_DELAY: self.wait * (attempts - 1)})
        return context.get_current()

    def record(self, attempts: int, operation: Context) -> None:
        self.attempts_hist.record(attempts, {semconv.RETRY_NAME: self.name, semconv.RETRY_RESULT: "success", semconv.RETRY_DEPTH: 1}, operation)
        self.duration_hist.record(0.001, {semconv.RETRY_NAME: self.name, semconv.RETRY_RESULT: "success"}, operation)


_ERROR = Status(StatusCode.ERROR)


def hand_built_retry(
    sdk: Sdk,
    retry: Callable[[Callable[[], str]], Callable[[], str]],
    work: Callable[[], str],
    *,
    name: str,
    qualname: str,
    wait: float,
) -> Callable[[], str]:
    """The `hand_built` variant of a retry scenario: ``retry(attempt)()`` with the library alone, where `attempt` runs
    `work` (which raises ConnectionError until it succeeds) inside an attempt span, all inside an operation span, with
    the `RetryFloor` telemetry."""
    floor = RetryFloor(sdk, name=name, qualname=qualname, wait=wait)

    def call() -> str:
        counter = {"attempt": 0}
        with floor.operation() as op:

            def attempt() -> str:
                counter["attempt"] += 1
                with floor.attempt(counter["attempt"]) as span:
                    try:
                        return work()
                    except ConnectionError as exc:
                        floor.failed(span, exc)
                        raise

            result = retry(attempt)()
            operation = floor.succeeded(op, counter["attempt"])
        floor.record(counter["attempt"], operation)
        return result

    return call
