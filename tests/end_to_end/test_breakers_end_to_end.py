"""End to end: circuitbreaker, aiobreaker and purgatory in an app run under ``opentelemetry-instrument``, exporting
over OTLP/gRPC to a real collector (rotel) on loopback. What the collector received is checked against the contract:
span names, scopes, kinds, parentage, attributes, status and state-change events, and the breaker metrics of the run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tests.support.breaker_checks import CYCLE_CALLS, CYCLE_TRANSITIONS
from tests.support.collector import Metric, RotelCollector, Span
from tests.support.processes import LAUNCHER, checked, otlp_env, run

APP = Path(__file__).resolve().parent / "_breakers_app.py"
DOWN = "__main__.DependencyDown"
ERROR, UNSET = "STATUS_CODE_ERROR", "STATUS_CODE_UNSET"
BREAKERS = {  # name: (library, what a tripping call and a failed probe raise, what describes a refusal)
    "cb-payments": ("circuitbreaker", DOWN, "circuitbreaker.CircuitBreakerError"),
    "aio-directory": ("aiobreaker", "aiobreaker.state.CircuitBreakerError", "aiobreaker.state.CircuitBreakerError"),
    "pg-stock": ("purgatory", DOWN, "purgatory.domain.model.OpenedState"),
}


def _complete(spans: list[Span], metrics: list[Metric]) -> tuple[list[Span], list[Metric]] | None:
    """All 18 call spans, and a metric export that counted every breaker's last transition (half_open → closed)."""
    calls = [s for s in spans if s.name.startswith("circuitbreaker ")]
    closed_again = {
        p.attributes.get("circuitbreaker.name")
        for m in metrics if m.name == "circuitbreaker.transitions" for p in m.points
        if p.attributes.get("circuitbreaker.previous_state") == "half_open"
        and p.attributes.get("circuitbreaker.state") == "closed"
    }
    return (spans, metrics) if len(calls) == 18 and closed_again >= set(BREAKERS) else None


def _last(metrics: list[Metric], name: str, library: str) -> Metric:
    """The last export of `name` by the scope of `library` (cumulative: the whole run)."""
    found = [m for m in metrics if m.name == name and m.scope == f"otel_resilience.{library}"]
    assert found, f"no metric {name!r} from {library}; got {sorted({(m.scope, m.name) for m in metrics})}"
    return found[-1]


def _values(metric: Metric, *keys: str) -> dict[tuple[Any, ...], int]:
    return {tuple(p.attributes[k] for k in keys): int(p.values["Value"]) for p in metric.points}


def _summary(span: Span) -> tuple[Any, ...]:
    changes = [
        (e.attributes["circuitbreaker.previous_state"], e.attributes["circuitbreaker.state"])
        for e in span.events if e.name == "circuitbreaker.state_change"
    ]
    a = span.attributes
    return a["circuitbreaker.state"], a["circuitbreaker.result"], a.get("error.type"), span.status, changes


def test_breaker_libraries_under_the_launcher_reach_the_collector(collector: RotelCollector) -> None:
    env = otlp_env(collector.grpc_endpoint, "breakers-e2e")
    checked(run([str(LAUNCHER), sys.executable, str(APP)], env))
    spans, metrics = collector.wait_for("every breaker call and the final metrics", _complete)

    by_id = {s.span_id: s for s in spans}
    for name, (library, tripped, refused) in BREAKERS.items():
        calls = sorted((s for s in spans if s.name == f"circuitbreaker {name}"), key=lambda s: s.start_ns)
        assert {(c.scope, c.kind) for c in calls} == {(f"otel_resilience.{library}", "SPAN_KIND_INTERNAL")}
        assert {c.resource["service.name"] for c in calls} == {"breakers-e2e"}
        assert [by_id[c.parent_id].name for c in calls] == [f"request {name}"] * 6
        assert {c.attributes["circuitbreaker.name"] for c in calls} == {name}
        assert [_summary(c) for c in calls] == [
            ("closed", "failure", DOWN, ERROR, []),
            ("closed", "failure", tripped, ERROR, [("closed", "open")]),
            ("open", "rejected", refused, ERROR, []),
            ("half_open", "failure", tripped, ERROR, [("open", "half_open"), ("half_open", "open")]),
            ("half_open", "success", None, UNSET, [("open", "half_open"), ("half_open", "closed")]),
            ("closed", "success", None, UNSET, []),
        ], name
        counts = [c.attributes.get("circuitbreaker.failure_count") for c in calls]
        assert all(c is None or isinstance(c, int) for c in counts) and counts[0] == 1

    for name, (library, _, _) in BREAKERS.items():
        calls_metric = _last(metrics, "circuitbreaker.calls", library)
        assert calls_metric.data_type == "Sum"
        assert _values(calls_metric, "circuitbreaker.name", "circuitbreaker.state", "circuitbreaker.result") == {
            (name, *key): value for key, value in CYCLE_CALLS.items()
        }
        transitions = _last(metrics, "circuitbreaker.transitions", library)
        keys = ("circuitbreaker.name", "circuitbreaker.previous_state", "circuitbreaker.state")
        assert _values(transitions, *keys) == {(name, *key): value for key, value in CYCLE_TRANSITIONS.items()}
        gauge = _last(metrics, "circuitbreaker.state", library)
        assert gauge.data_type == "Gauge"
        assert _values(gauge, "circuitbreaker.name", "circuitbreaker.state") == {
            (name, "closed"): 1, (name, "open"): 0, (name, "half_open"): 0,
        }
