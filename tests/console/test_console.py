"""The console tree exporter: exact rendering of hand-made spans, buffering per trace, colour and encoding rules,
the entry point, and real tenacity/pybreaker traces printed through it."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from importlib.metadata import entry_points
from typing import Any

import pybreaker
import pytest
import tenacity
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from otel_resilience import semconv
from otel_resilience.console import ConsoleTreeSpanExporter, format_duration, format_seconds
from otel_resilience.instrumentation.pybreaker import PyBreakerInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
MS = 1_000_000


def _context(span_id: int, *, remote: bool = False, trace_id: int = TRACE_ID) -> SpanContext:
    return SpanContext(trace_id, span_id, is_remote=remote, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def _span(
    name: str,
    span_id: int,
    parent: int | None,
    start_ms: float,
    end_ms: float,
    attributes: dict[str, Any] | None = None,
    *,
    error: bool = False,
    events: tuple[Event, ...] = (),
    trace_id: int = TRACE_ID,
) -> ReadableSpan:
    return ReadableSpan(
        name=name,
        context=_context(span_id, trace_id=trace_id),
        parent=_context(parent, trace_id=trace_id) if parent is not None else None,
        attributes=attributes or {},
        events=events,
        kind=SpanKind.INTERNAL,
        status=Status(StatusCode.ERROR) if error else Status(StatusCode.UNSET),
        start_time=int(start_ms * MS),
        end_time=int(end_ms * MS),
    )


def _exception(kind: str, message: str) -> Event:
    return Event(semconv.EXCEPTION_EVENT, {semconv.EXCEPTION_TYPE: kind, semconv.EXCEPTION_MESSAGE: message})


def _design_trace() -> list[ReadableSpan]:
    """DESIGN.md's example: fetch_user failing twice then succeeding, under a request span; in end order."""
    attempt = {semconv.RETRY_NAME: "app.fetch_user"}
    return [
        _span("fetch_user", 3, 2, 0.1, 0.4, {**attempt, semconv.RETRY_ATTEMPT: 1, semconv.ERROR_TYPE: "ConnectionError",
                                             semconv.RETRY_DELAY: 0.1}, error=True,
              events=(_exception("ConnectionError", "reset by peer\nsecond line"),)),
        _span("fetch_user", 4, 2, 100.5, 100.9, {**attempt, semconv.RETRY_ATTEMPT: 2,
                                                 semconv.ERROR_TYPE: "ConnectionError", semconv.RETRY_DELAY: 0.2},
              error=True, events=(_exception("ConnectionError", "reset by peer"),)),
        _span("fetch_user", 5, 2, 301.0, 301.25, {**attempt, semconv.RETRY_ATTEMPT: 3}),
        _span("retry fetch_user", 2, 1, 0.05, 301.3, {
            semconv.RETRY_NAME: "app.fetch_user", semconv.RETRY_DEPTH: 1, semconv.RETRY_MAX_ATTEMPTS: 3,
            semconv.RETRY_ATTEMPTS: 3, semconv.RETRY_RESULT: "success", semconv.RETRY_TOTAL_DELAY: 0.30000000000000004,
        }),
        _span("circuitbreaker payments", 6, 1, 302.0, 302.5, {
            semconv.BREAKER_NAME: "payments", semconv.BREAKER_STATE: "closed", semconv.BREAKER_RESULT: "failure",
            semconv.BREAKER_FAILURE_COUNT: 5, semconv.ERROR_TYPE: "pybreaker.CircuitBreakerError",
        }, error=True, events=(
            Event(semconv.BREAKER_STATE_CHANGE_EVENT, {semconv.BREAKER_PREVIOUS_STATE: "closed",
                                                       semconv.BREAKER_STATE: "open"}),
            _exception("pybreaker.CircuitBreakerError", "Failures threshold reached, circuit breaker opened"),
        )),
        _span("GET /users/{id}", 1, None, 0.0, 303.0, {"http.route": "/users/{id}"}),
    ]


EXPECTED_TREE = """\
trace 0af7651916cd43dd8448eb211c80319c
GET /users/{id}                 303 ms
├── retry fetch_user            301 ms  retry.name=app.fetch_user retry.attempts=3 retry.max_attempts=3 \
retry.result=success retry.total_delay=300ms retry.depth=1
│   ├── fetch_user              300 µs  retry.attempt=1 error.type=ConnectionError retry.delay=100ms  ✗ reset by peer
│   ├── fetch_user              400 µs  retry.attempt=2 error.type=ConnectionError retry.delay=200ms  ✗ reset by peer
│   └── fetch_user              250 µs  retry.attempt=3
└── circuitbreaker payments     500 µs  error.type=pybreaker.CircuitBreakerError circuitbreaker.state=closed \
circuitbreaker.result=failure circuitbreaker.failure_count=5  ✗ Failures threshold reached, circuit breaker opened
        ⚡ circuitbreaker.state_change closed → open

"""


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _no_colour_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)


def test_a_finished_trace_prints_as_the_tree_of_the_design() -> None:
    out = io.StringIO()
    exporter = ConsoleTreeSpanExporter(out)
    for span in _design_trace():  # one span per export call, as a simple span processor delivers them
        assert exporter.export([span]) is SpanExportResult.SUCCESS
    assert out.getvalue() == EXPECTED_TREE


def test_nothing_prints_before_the_root_span_ends_and_one_batch_prints_the_same_tree() -> None:
    out = io.StringIO()
    exporter = ConsoleTreeSpanExporter(out)
    *children, root = _design_trace()
    exporter.export(children)
    assert out.getvalue() == ""
    exporter.export([root])
    assert out.getvalue() == EXPECTED_TREE


def test_a_span_with_a_remote_parent_is_a_local_root() -> None:
    out = io.StringIO()
    span = ReadableSpan(
        name="GET /inventory", context=_context(7), parent=_context(99, remote=True), attributes={},
        kind=SpanKind.SERVER, status=Status(StatusCode.UNSET), start_time=0, end_time=2_500,
    )
    ConsoleTreeSpanExporter(out).export([span])
    assert out.getvalue() == f"trace {TRACE_ID:032x}\nGET /inventory       2 µs\n\n"


def test_traces_waiting_for_their_root_print_as_incomplete_on_flush_and_shutdown() -> None:
    out = io.StringIO()
    exporter = ConsoleTreeSpanExporter(out)
    exporter.export([_span("orphan", 3, 2, 0, 1.5, {semconv.RETRY_ATTEMPT: 1})])
    assert out.getvalue() == ""
    assert exporter.force_flush() is True
    assert out.getvalue() == (
        f"trace {TRACE_ID:032x} (incomplete: its root span has not ended here)\n"
        "orphan     1.5 ms  retry.attempt=1\n\n"
    )
    exporter.export([_span("late", 4, 2, 0, 1, trace_id=2)])
    exporter.shutdown()
    assert out.getvalue().endswith(f"trace {2:032x} (incomplete: its root span has not ended here)\nlate       1 ms\n\n")
    assert exporter.export([_span("after", 5, None, 0, 1)]) is SpanExportResult.FAILURE


def test_pending_traces_are_bounded() -> None:
    out = io.StringIO()
    exporter = ConsoleTreeSpanExporter(out, max_pending_traces=2)
    exporter.export([_span(f"child-{n}", 10 + n, 1, 0, 1, trace_id=100 + n) for n in range(3)])
    assert out.getvalue() == (
        f"trace {100:032x} (incomplete: its root span has not ended here)\nchild-0       1 ms\n\n"
    )


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    plain, terminal = io.StringIO(), Terminal()
    for stream in (plain, terminal):
        ConsoleTreeSpanExporter(stream).export(_design_trace())
    assert "\x1b[" not in plain.getvalue()
    coloured = terminal.getvalue()
    assert "retry.result=\x1b[32msuccess\x1b[0m" in coloured
    assert "error.type=\x1b[31mConnectionError\x1b[0m" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == EXPECTED_TREE

    monkeypatch.setenv("NO_COLOR", "1")
    quiet = Terminal()
    ConsoleTreeSpanExporter(quiet).export(_design_trace())
    assert quiet.getvalue() == EXPECTED_TREE
    forced = io.StringIO()
    ConsoleTreeSpanExporter(forced, colour=True).export(_design_trace())
    assert "\x1b[31m" in forced.getvalue()


def test_a_stream_that_cannot_encode_the_tree_glyphs_gets_ascii() -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    ConsoleTreeSpanExporter(stream).export(_design_trace())
    text = raw.getvalue().decode("ascii")
    assert "|-- retry fetch_user" in text
    assert "|   `-- fetch_user" in text
    assert "  x reset by peer" in text
    assert "* circuitbreaker.state_change closed -> open" in text
    assert "300 us" in text


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [(0, "0 ns"), (999, "999 ns"), (1_500, "2 µs"), (2_340_000, "2.34 ms"), (999_000_000, "999 ms"),
     (12_300_000_000, "12.3 s")],
)
def test_durations_read_at_a_glance(nanoseconds: int, text: str) -> None:
    assert format_duration(nanoseconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.0, "0 s"), (0.0004, "400 µs"), (0.0123, "12.3 ms"), (0.1, "100 ms"), (2.5, "2.5 s")]
)
def test_delays_read_at_a_glance(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


def test_registered_as_the_resilience_console_traces_exporter() -> None:
    (entry_point,) = entry_points(group="opentelemetry_traces_exporter", name="resilience_console")
    assert entry_point.load() is ConsoleTreeSpanExporter


@pytest.fixture
def console_provider() -> Iterator[tuple[TracerProvider, io.StringIO]]:
    out = io.StringIO()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ConsoleTreeSpanExporter(out)))
    TenacityInstrumentor().instrument(tracer_provider=provider)
    PyBreakerInstrumentor().instrument(tracer_provider=provider)
    yield provider, out
    TenacityInstrumentor().uninstrument()
    PyBreakerInstrumentor().uninstrument()
    provider.shutdown()


def _without_durations(text: str) -> str:
    return re.sub(r" +\d+(\.\d+)? (ns|µs|ms|s)(?=  |\n)", " <d>", re.sub(r"trace [0-9a-f]{32}", "trace <id>", text))


def test_real_tenacity_and_pybreaker_traces(console_provider: tuple[TracerProvider, io.StringIO]) -> None:
    provider, out = console_provider
    calls = []

    @tenacity.retry(stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_fixed(0), reraise=True)
    def lookup() -> None:
        calls.append(1)
        raise KeyError("sku-1")

    breaker = pybreaker.CircuitBreaker(fail_max=1, name="stock")
    with provider.get_tracer("test").start_as_current_span("handle"):
        with pytest.raises(KeyError):
            lookup()
        for _ in range(2):
            with pytest.raises(pybreaker.CircuitBreakerError):
                breaker.call(lookup)

    lines = _without_durations(out.getvalue()).splitlines()
    assert lines[:4] == [
        "trace <id>",
        "handle <d>",
        f"├── retry test_real_tenacity_and_pybreaker_traces.<locals>.lookup <d>  retry.name={__name__}."
        "test_real_tenacity_and_pybreaker_traces.<locals>.lookup error.type=KeyError retry.attempts=2 "
        "retry.max_attempts=2 retry.result=exhausted retry.total_delay=0s retry.depth=1  ✗ 'sku-1'",
        "│   ├── test_real_tenacity_and_pybreaker_traces.<locals>.lookup <d>  retry.attempt=1 error.type=KeyError "
        "retry.delay=0s  ✗ 'sku-1'",
    ]
    assert "├── circuitbreaker stock <d>  error.type=pybreaker.CircuitBreakerError circuitbreaker.state=closed " \
           "circuitbreaker.result=failure circuitbreaker.failure_count=1  ✗ Failures threshold reached, circuit " \
           "breaker opened" in lines
    assert "│   │   ⚡ circuitbreaker.state_change closed → open" in lines
    assert lines[-2].startswith("└── circuitbreaker stock <d>  error.type=pybreaker.CircuitBreakerError "
                                "circuitbreaker.state=open circuitbreaker.result=rejected")


def test_attempts_recorded_as_events_print_under_their_span() -> None:
    """``attempt_spans="none"`` puts attempts on the operation span as events; HTTP beside contrib does the same for
    earlier attempts (``http.request.resend``)."""
    events = (
        Event(semconv.RETRY_ATTEMPT_EVENT, {semconv.RETRY_ATTEMPT: 1, semconv.ERROR_TYPE: "ConnectionError",
                                            semconv.EXCEPTION_TYPE: "ConnectionError",
                                            semconv.EXCEPTION_MESSAGE: "reset", semconv.RETRY_DELAY: 0.5}),
        Event(semconv.RETRY_ATTEMPT_EVENT, {semconv.RETRY_ATTEMPT: 2}),
    )
    operation = _span("retry fetch_user", 2, None, 0, 1, {semconv.RETRY_ATTEMPTS: 2, semconv.RETRY_RESULT: "success"},
                      events=events)
    resend = Event(semconv.HTTP_RESEND_EVENT, {semconv.RETRY_ATTEMPT: 1, semconv.HTTP_RESPONSE_STATUS_CODE: 503,
                                               semconv.RETRY_DELAY: 0.25})
    request = _span("GET", 3, None, 0, 2, {semconv.HTTP_REQUEST_METHOD: "GET", semconv.HTTP_REQUEST_RESEND_COUNT: 1},
                    events=(resend,), trace_id=5)
    out = io.StringIO()
    ConsoleTreeSpanExporter(out).export([operation, request])
    assert out.getvalue() == (
        f"trace {TRACE_ID:032x}\n"
        "retry fetch_user       1 ms  retry.attempts=2 retry.result=success\n"
        "    ↻ retry.attempt  retry.attempt=1 error.type=ConnectionError retry.delay=500ms  ✗ reset\n"
        "    ↻ retry.attempt  retry.attempt=2\n"
        "\n"
        f"trace {5:032x}\n"
        "GET       2 ms  http.request.method=GET http.request.resend_count=1\n"
        "    ↻ http.request.resend  retry.attempt=1 http.response.status_code=503 retry.delay=250ms\n"
        "\n"
    )
