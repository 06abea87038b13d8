"""End to end: the demo service as a child process, (a) under ``opentelemetry-instrument`` and (b) with
``otel_resilience.setup()``, exporting over OTLP/gRPC and OTLP/HTTP to a real collector (rotel) on loopback; and the
same service printing its console trees, with setup() and under the launcher.

What the collector received is checked against the contract: span names and kinds, parentage, attribute values and
types, status, events, and the metric points of the whole run.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import pytest

from tests.support.collector import Metric, RotelCollector, Span, parse
from tests.support.processes import LAUNCHER, SERVICE, checked, clean_env, otlp_env, run

PROTOCOLS = ("grpc", "http/protobuf")
DOWN = "__main__.DependencyDown"
BREAKER_ERROR = "pybreaker.CircuitBreakerError"


def _endpoint(collector: RotelCollector, protocol: str) -> str:
    return collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint


def _complete(spans: list[Span], metrics: list[Metric]) -> tuple[list[Span], list[Metric]] | None:
    """Everything the demo sends, once it has all arrived: 7 attempts, 2 retry operations, 5 breaker calls, 7
    requests, and the final metrics (the last transition, half_open → closed, counted)."""
    names = [s.name for s in spans]
    last_transition = any(
        p.attributes.get("circuitbreaker.previous_state") == "half_open"
        for m in metrics if m.name == "circuitbreaker.transitions" for p in m.points
    )
    if (names.count("fetch_user"), names.count("retry fetch_user"), names.count("circuitbreaker payments"),
            len([n for n in names if n.startswith(("GET ", "POST "))])) == (7, 2, 5, 7) and last_transition:
        return spans, metrics
    return None


def _last(metrics: list[Metric], name: str) -> Metric:
    """The last export of the cumulative metric `name`: the whole run."""
    found = [m for m in metrics if m.name == name]
    assert found, f"no metric {name!r} received; got {sorted({m.name for m in metrics})}"
    return found[-1]


def _points(metric: Metric, *keys: str) -> dict[tuple[Any, ...], dict[str, str]]:
    return {tuple(p.attributes[k] for k in keys): p.values for p in metric.points}


def assert_demo_telemetry(spans: list[Span], metrics: list[Metric], *, service: str, launcher: bool) -> None:
    """The demo's five stories, as the collector received them."""
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        assert span.resource["service.name"] == service
        assert ("telemetry.auto.version" in span.resource) is launcher  # which of the two configured the SDK

    # Retries: one operation span per request, its attempts as children.
    operations = sorted((s for s in spans if s.name == "retry fetch_user"), key=lambda s: s.start_ns)
    assert [op.scope for op in operations] == ["otel_resilience.tenacity"] * 2
    assert [op.kind for op in operations] == ["SPAN_KIND_INTERNAL"] * 2
    assert [by_id[op.parent_id].name for op in operations] == ["GET /users/{id}"] * 2
    success, exhausted = operations
    for op in operations:
        assert op.attributes["retry.name"] == "__main__.fetch_user"
        assert op.attributes["retry.depth"] == 1
        assert op.attributes["retry.max_attempts"] == 4
        assert isinstance(op.attributes["retry.total_delay"], float) and op.attributes["retry.total_delay"] > 0
    assert (success.attributes["retry.attempts"], success.attributes["retry.result"]) == (3, "success")
    assert success.status == "STATUS_CODE_UNSET" and "error.type" not in success.attributes
    assert (exhausted.attributes["retry.attempts"], exhausted.attributes["retry.result"]) == (4, "exhausted")
    assert exhausted.status == "STATUS_CODE_ERROR" and exhausted.attributes["error.type"] == DOWN
    (final_failure,) = exhausted.events
    assert final_failure.name == "exception"
    assert final_failure.attributes["exception.type"] == DOWN
    assert "Traceback" in final_failure.attributes["exception.stacktrace"]  # the operation's final failure only

    for op, failures in ((success, 2), (exhausted, 4)):
        attempts = sorted((s for s in spans if s.parent_id == op.span_id), key=lambda s: s.start_ns)
        count = op.attributes["retry.attempts"]
        assert [a.name for a in attempts] == ["fetch_user"] * count
        assert [a.attributes["retry.attempt"] for a in attempts] == list(range(1, count + 1))
        assert [a.status for a in attempts] == ["STATUS_CODE_ERROR"] * failures + ["STATUS_CODE_UNSET"] * (
            count - failures)
        for attempt in attempts[:failures]:
            assert attempt.attributes["error.type"] == DOWN
            assert [(e.name, e.attributes["exception.type"]) for e in attempt.events] == [("exception", DOWN)]
            assert "exception.stacktrace" not in attempt.events[0].attributes
        delays = [a.attributes.get("retry.delay") for a in attempts]
        assert all(isinstance(d, float) and d > 0 for d in delays[:-1]) and delays[-1] is None
        assert sum(delays[:-1]) == pytest.approx(op.attributes["retry.total_delay"])

    # The breaker: three failures (the third trips it), a rejection, a half-open probe that closes it.
    calls = sorted((s for s in spans if s.name == "circuitbreaker payments"), key=lambda s: s.start_ns)
    assert {(c.scope, c.kind) for c in calls} == {("otel_resilience.pybreaker", "SPAN_KIND_INTERNAL")}
    assert [by_id[c.parent_id].name for c in calls] == ["POST /payments"] * 5
    assert [
        (c.attributes["circuitbreaker.name"], c.attributes["circuitbreaker.state"],
         c.attributes["circuitbreaker.result"], c.attributes.get("error.type"), c.status)
        for c in calls
    ] == [
        ("payments", "closed", "failure", DOWN, "STATUS_CODE_ERROR"),
        ("payments", "closed", "failure", DOWN, "STATUS_CODE_ERROR"),
        ("payments", "closed", "failure", BREAKER_ERROR, "STATUS_CODE_ERROR"),
        ("payments", "open", "rejected", BREAKER_ERROR, "STATUS_CODE_ERROR"),
        ("payments", "half_open", "success", None, "STATUS_CODE_UNSET"),
    ]
    assert [c.attributes.get("circuitbreaker.failure_count") for c in calls] == [1, 2, 3, 3, 0]
    changes = [
        [(e.attributes["circuitbreaker.previous_state"], e.attributes["circuitbreaker.state"])
         for e in c.events if e.name == "circuitbreaker.state_change"]
        for c in calls
    ]
    assert changes == [[], [], [("closed", "open")], [], [("open", "half_open"), ("half_open", "closed")]]

    # Metrics of the whole run.
    attempts_metric = _last(metrics, "retry.attempts")
    assert (attempts_metric.scope, attempts_metric.data_type, attempts_metric.unit) == (
        "otel_resilience.tenacity", "Histogram", "{attempt}")
    assert {k: (v["Count"], v["Sum"]) for k, v in
            _points(attempts_metric, "retry.name", "retry.result", "retry.depth").items()} == {
        ("__main__.fetch_user", "success", 1): ("1", "3"),
        ("__main__.fetch_user", "exhausted", 1): ("1", "4"),
    }
    duration = _last(metrics, "retry.duration")
    assert (duration.data_type, duration.unit) == ("Histogram", "s")
    assert set(_points(duration, "retry.name", "retry.result")) == {
        ("__main__.fetch_user", "success"), ("__main__.fetch_user", "exhausted")}
    breaker_calls = _last(metrics, "circuitbreaker.calls")
    assert (breaker_calls.scope, breaker_calls.data_type, breaker_calls.unit) == (
        "otel_resilience.pybreaker", "Sum", "{call}")
    assert {k: v["Value"] for k, v in _points(
        breaker_calls, "circuitbreaker.name", "circuitbreaker.state", "circuitbreaker.result").items()} == {
        ("payments", "closed", "failure"): "3",
        ("payments", "open", "rejected"): "1",
        ("payments", "half_open", "success"): "1",
    }
    transitions = _last(metrics, "circuitbreaker.transitions")
    assert {k: v["Value"] for k, v in _points(
        transitions, "circuitbreaker.name", "circuitbreaker.previous_state", "circuitbreaker.state").items()} == {
        ("payments", "closed", "open"): "1",
        ("payments", "open", "half_open"): "1",
        ("payments", "half_open", "closed"): "1",
    }
    state = _last(metrics, "circuitbreaker.state")
    assert state.data_type == "Gauge"
    assert {k: v["Value"] for k, v in _points(state, "circuitbreaker.name", "circuitbreaker.state").items()} == {
        ("payments", "closed"): "1", ("payments", "open"): "0", ("payments", "half_open"): "0"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_under_the_launcher_over_otlp(collector: RotelCollector, protocol: str) -> None:
    service = f"e2e-launcher-{protocol.replace('/', '-')}"
    env = otlp_env(_endpoint(collector, protocol), service, protocol)
    result = checked(run([str(LAUNCHER), sys.executable, str(SERVICE)], env))
    assert "[7] after the reset timeout a half-open probe closes it" in result.stdout
    spans, metrics = collector.wait_for("the demo's telemetry", _complete)
    assert_demo_telemetry(spans, metrics, service=service, launcher=True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_with_setup_over_otlp(collector: RotelCollector, protocol: str) -> None:
    command = [sys.executable, str(SERVICE), "--exporter", "otlp", "--protocol", protocol,
               "--endpoint", _endpoint(collector, protocol)]
    result = checked(run(command, clean_env()))
    assert "[7] after the reset timeout a half-open probe closes it" in result.stdout
    spans, metrics = collector.wait_for("the demo's telemetry", _complete)
    assert_demo_telemetry(spans, metrics, service="resilience-demo", launcher=False)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_with_setup_and_standard_variables(collector: RotelCollector, protocol: str) -> None:
    env = clean_env(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_ENDPOINT=_endpoint(collector, protocol),
    )
    checked(run([sys.executable, str(SERVICE)], env))
    spans, metrics = collector.wait_for("the demo's telemetry", _complete)
    assert_demo_telemetry(spans, metrics, service="resilience-demo", launcher=False)


# --- the console view of the demo -------------------------------------------------------------------------------

DEMO_CONSOLE = """\
[1] retries succeed: GET /users/1
trace <id>
GET /users/{id} <d>  http.response.status_code=200
└── retry fetch_user <d>  retry.name=__main__.fetch_user retry.attempts=3 retry.max_attempts=4 retry.result=success \
retry.total_delay=<s> retry.depth=1
    ├── fetch_user <d>  retry.attempt=1 error.type=__main__.DependencyDown retry.delay=<s>  \
✗ user-directory unavailable while handling user 1
    ├── fetch_user <d>  retry.attempt=2 error.type=__main__.DependencyDown retry.delay=<s>  \
✗ user-directory unavailable while handling user 1
    └── fetch_user <d>  retry.attempt=3

    -> 200 (user-directory: user 1 ok)

[2] retries exhausted: GET /users/2
trace <id>
GET /users/{id} <d>  http.response.status_code=503  ✗ DependencyDown
└── retry fetch_user <d>  retry.name=__main__.fetch_user error.type=__main__.DependencyDown retry.attempts=4 \
retry.max_attempts=4 retry.result=exhausted retry.total_delay=<s> retry.depth=1  \
✗ user-directory unavailable while handling user 2
    ├── fetch_user <d>  retry.attempt=1 error.type=__main__.DependencyDown retry.delay=<s>  \
✗ user-directory unavailable while handling user 2
    ├── fetch_user <d>  retry.attempt=2 error.type=__main__.DependencyDown retry.delay=<s>  \
✗ user-directory unavailable while handling user 2
    ├── fetch_user <d>  retry.attempt=3 error.type=__main__.DependencyDown retry.delay=<s>  \
✗ user-directory unavailable while handling user 2
    └── fetch_user <d>  retry.attempt=4 error.type=__main__.DependencyDown  \
✗ user-directory unavailable while handling user 2

    -> 503 (DependencyDown: user-directory unavailable while handling user 2)

[3] a payment fails (1 of 3): POST /payments 10
trace <id>
POST /payments <d>  http.response.status_code=503  ✗ DependencyDown
└── circuitbreaker payments <d>  error.type=__main__.DependencyDown circuitbreaker.state=closed \
circuitbreaker.result=failure circuitbreaker.failure_count=1  ✗ payment-gateway unavailable while handling charge 10

    -> 503 (DependencyDown: payment-gateway unavailable while handling charge 10)

[4] a payment fails (2 of 3): POST /payments 20
trace <id>
POST /payments <d>  http.response.status_code=503  ✗ DependencyDown
└── circuitbreaker payments <d>  error.type=__main__.DependencyDown circuitbreaker.state=closed \
circuitbreaker.result=failure circuitbreaker.failure_count=2  ✗ payment-gateway unavailable while handling charge 20

    -> 503 (DependencyDown: payment-gateway unavailable while handling charge 20)

[5] the third failure opens the breaker: POST /payments 30
trace <id>
POST /payments <d>  http.response.status_code=503  ✗ CircuitBreakerError
└── circuitbreaker payments <d>  error.type=pybreaker.CircuitBreakerError circuitbreaker.state=closed \
circuitbreaker.result=failure circuitbreaker.failure_count=3  ✗ Failures threshold reached, circuit breaker opened
        ⚡ circuitbreaker.state_change closed → open

    -> 503 (CircuitBreakerError: Failures threshold reached, circuit breaker opened)

[6] the open breaker rejects: POST /payments 40
trace <id>
POST /payments <d>  http.response.status_code=503  ✗ CircuitBreakerError
└── circuitbreaker payments <d>  error.type=pybreaker.CircuitBreakerError circuitbreaker.state=open \
circuitbreaker.result=rejected circuitbreaker.failure_count=3  ✗ Timeout not elapsed yet, circuit breaker still open

    -> 503 (CircuitBreakerError: Timeout not elapsed yet, circuit breaker still open)

[7] after the reset timeout a half-open probe closes it: POST /payments 50
trace <id>
POST /payments <d>  http.response.status_code=200
└── circuitbreaker payments <d>  circuitbreaker.state=half_open circuitbreaker.result=success \
circuitbreaker.failure_count=0
        ⚡ circuitbreaker.state_change open → half_open
        ⚡ circuitbreaker.state_change half_open → closed

    -> 200 (payment-gateway: charge 50 ok)

otel_resilience summary
retries              operations  success  exhausted  attempts
__main__.fetch_user           2        1          1         7

breakers  state   calls  success  failure  rejected  transitions
payments  closed      5        1        3         1  3 (closed→open, open→half_open, half_open→closed)
"""
"""What `./demo` prints: the trees as each request ends, then the metrics summary when it shuts down."""


def _normalised(text: str) -> str:
    """The demo's output with what varies between runs replaced: trace ids, durations, delays."""
    text = re.sub(r"trace [0-9a-f]{32}", "trace <id>", text)
    text = re.sub(r" +\d+(\.\d+)? (ns|µs|ms|s)(?=  |\n)", " <d>", text)
    return re.sub(r"(retry\.(?:total_)?delay)=[0-9.]+(µs|ms|s)", r"\1=<s>", text)


def test_the_demo_prints_its_trees_with_setup() -> None:
    result = checked(run([sys.executable, str(SERVICE)], clean_env()))
    assert _normalised(result.stdout) == DEMO_CONSOLE


def test_the_demo_prints_the_same_trees_under_the_launcher() -> None:
    env = clean_env(OTEL_TRACES_EXPORTER="resilience_console", OTEL_METRICS_EXPORTER="resilience_console")
    result = checked(run([str(LAUNCHER), sys.executable, str(SERVICE)], env))
    assert _normalised(result.stdout) == DEMO_CONSOLE


def test_the_demo_chooses_the_same_delays_every_run() -> None:
    delays = [
        re.findall(r"retry\.delay=([0-9.]+(?:µs|ms|s))", checked(run([sys.executable, str(SERVICE)], clean_env())).stdout)
        for _ in range(2)
    ]
    assert len(delays[0]) == 5
    assert delays[0] == delays[1]


# --- the parser of the collector's output, on a fixed sample -----------------------------------------------------

SAMPLE = """\
\x1b[2m2026-11-25T14:24:44Z\x1b[0m INFO Starting Rotel.
ResourceSpans #0
Resource attributes:
     -> service.name: Str(sample)
ScopeSpans #0
InstrumentationScope otel_resilience.tenacity 0.1.0
Span #0
    Trace ID       : f70e78c45a11bfa23b6701c300e2f390
    Parent ID      : 3e91e1b51100c79a
    ID             : a2dddf0b977c790e
    Name           : fetch_user
    Kind           : SPAN_KIND_INTERNAL
Start time: 1795616692611633392
End time: 1795616692611667052
    Status code    : STATUS_CODE_ERROR
    Status message : 
Attributes:
     -> retry.attempt: Int(1)
     -> retry.delay: Double(0.1)
     -> error.type: Str(ConnectionError)
     -> note: Str(line one
line two (with parentheses)
  -> not: Str(an attribute))
     -> ok: Bool(true)
Events:
SpanEvent #0
     -> Name: exception
     -> Timestamp: 1795616692611647673
     -> DroppedAttributesCount: 0
     -> Attributes::
          -> exception.type: Str(ConnectionError)
ResourceMetrics #0
Resource attributes:
     -> service.name: Str(sample)
ScopeMetrics #0
InstrumentationScope otel_resilience.pybreaker 0.1.0
Metric #0
Descriptor:
     -> Name: circuitbreaker.calls
     -> Unit: {call}
     -> DataType: Sum
NumberDataPoints #0
Data point attributes:
     -> circuitbreaker.state: Str(open)
StartTimestamp: 1795616692611935640
Value: 2
"""


def test_the_collector_output_parser() -> None:
    (span,), (metric,) = parse(SAMPLE)
    assert (span.scope, span.resource, span.name, span.kind, span.status) == (
        "otel_resilience.tenacity", {"service.name": "sample"}, "fetch_user", "SPAN_KIND_INTERNAL", "STATUS_CODE_ERROR")
    assert (span.trace_id, span.parent_id, span.span_id, span.start_ns) == (
        "f70e78c45a11bfa23b6701c300e2f390", "3e91e1b51100c79a", "a2dddf0b977c790e", 1795616692611633392)
    assert span.attributes == {
        "retry.attempt": 1,
        "retry.delay": 0.1,
        "error.type": "ConnectionError",
        "note": "line one\nline two (with parentheses)\n  -> not: Str(an attribute)",
        "ok": True,
    }
    assert [(e.name, e.attributes) for e in span.events] == [("exception", {"exception.type": "ConnectionError"})]
    assert (metric.scope, metric.name, metric.unit, metric.data_type) == (
        "otel_resilience.pybreaker", "circuitbreaker.calls", "{call}", "Sum")
    assert [(p.attributes, p.values) for p in metric.points] == [({"circuitbreaker.state": "open"}, {"Value": "2"})]
