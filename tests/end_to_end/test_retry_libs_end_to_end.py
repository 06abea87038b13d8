"""End to end: backoff and stamina in an app run under ``opentelemetry-instrument`` (which instruments every installed
library, tenacity included), exporting over OTLP/gRPC to a real collector (rotel) on loopback. What the collector
received is checked against the contract: span names, scopes, kinds, parentage, attribute values and types, status,
events, retry depth, and the ``retry.attempts`` points of the run; and a stamina retry is recorded once (nothing from
the tenacity scope, although tenacity is instrumented too)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.collector import Metric, RotelCollector, Span
from tests.support.processes import LAUNCHER, checked, otlp_env, run

APP = Path(__file__).resolve().parent / "_retry_libs_app.py"
DOWN = "__main__.DependencyDown"
ERROR, UNSET = "STATUS_CODE_ERROR", "STATUS_CODE_UNSET"
BACKOFF, STAMINA = "otel_resilience.backoff", "otel_resilience.stamina"
SPANS = 23  # the four stories: 5 + 4 + 10 + 4 spans (the app's own span, operations, attempts)


def _complete(spans: list[Span], metrics: list[Metric]) -> tuple[list[Span], list[Metric]] | None:
    points = sum(len(m.points) for m in metrics if m.name == "retry.attempts" and m.scope in (BACKOFF, STAMINA))
    return (spans, metrics) if len(spans) >= SPANS and points >= 5 else None


def _children(spans: list[Span], parent: Span) -> list[Span]:
    return sorted((s for s in spans if s.parent_id == parent.span_id), key=lambda s: s.start_ns)


def _operation(spans: list[Span], parent: Span, scope: str, qualname: str, **expected: Any) -> tuple[Span, list[Span]]:
    """The one operation span under `parent`, its attributes as `expected`, and its attempts (checked in order)."""
    (op,) = [s for s in _children(spans, parent) if s.name == f"retry {qualname}"]
    assert (op.scope, op.kind) == (scope, "SPAN_KIND_INTERNAL")
    assert op.attributes["retry.name"] == f"__main__.{qualname}"
    for key, value in expected.items():
        assert op.attributes[key.replace("_", ".", 1)] == value, key
    attempts = _children(spans, op)
    assert [a.name for a in attempts] == [qualname] * op.attributes["retry.attempts"]
    assert [a.attributes["retry.attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
    assert all((a.scope, a.kind) == (scope, "SPAN_KIND_INTERNAL") for a in attempts)
    return op, attempts


def _failed(attempt: Span) -> bool:
    if attempt.status != ERROR:
        return False
    assert attempt.attributes["error.type"] == DOWN
    assert [(e.name, e.attributes["exception.type"]) for e in attempt.events] == [("exception", DOWN)]
    return True


def test_backoff_and_stamina_under_the_launcher_reach_the_collector(collector: RotelCollector) -> None:
    env = otlp_env(collector.grpc_endpoint, "retry-libs-e2e")
    result = checked(run([str(LAUNCHER), sys.executable, str(APP)], env))
    assert "{'user-directory': 3, 'orders': 2, 'stock': 4, 'profiles': 2}" in result.stdout
    spans, metrics = collector.wait_for("every story's spans and the retry metrics", _complete)

    assert len(spans) == SPANS
    assert {s.scope for s in spans} == {"retry-libs-app", BACKOFF, STAMINA}  # no second set from tenacity's scope
    assert all(s.resource["service.name"] == "retry-libs-e2e" for s in spans)
    story = {s.name: s for s in spans if s.scope == "retry-libs-app"}

    # backoff recovers on the third attempt; delays are the waits backoff chose
    op, attempts = _operation(spans, story["backoff story"], BACKOFF, "fetch_user", retry_depth=1, retry_max_attempts=3,
                              retry_attempts=3, retry_result="success")
    assert op.status == UNSET and "error.type" not in op.attributes and op.events == []
    assert [_failed(a) for a in attempts] == [True, True, False]
    assert [a.attributes.get("retry.delay") for a in attempts] == [0.001, 0.001, None]
    assert op.attributes["retry.total_delay"] == pytest.approx(0.002)
    assert isinstance(op.attributes["retry.total_delay"], float) and isinstance(op.attributes["retry.depth"], int)

    # stamina recovers on the second
    op, attempts = _operation(spans, story["stamina story"], STAMINA, "fetch_order", retry_depth=1, retry_max_attempts=3,
                              retry_attempts=2, retry_result="success")
    assert [_failed(a) for a in attempts] == [True, False]
    assert [a.attributes.get("retry.delay") for a in attempts] == [0.001, None]

    # stamina around backoff, both give up: 2 x 2 calls, depth 1 and 2, each inner operation under an outer attempt
    outer, outer_attempts = _operation(spans, story["nested story"], STAMINA, "reserve", retry_depth=1,
                                       retry_attempts=2, retry_result="exhausted")
    assert outer.status == ERROR and outer.attributes["error.type"] == DOWN
    (final,) = outer.events
    assert final.name == "exception" and "Traceback" in final.attributes["exception.stacktrace"]
    for outer_attempt in outer_attempts:
        inner, inner_attempts = _operation(spans, outer_attempt, BACKOFF, "read_stock", retry_depth=2,
                                           retry_max_attempts=2, retry_attempts=2, retry_result="exhausted")
        assert inner.status == ERROR and [_failed(a) for a in inner_attempts] == [True, True]
        assert _failed(outer_attempt)

    # a retry_context block in async for, named after the function it is written in
    op, attempts = _operation(spans, story["async story"], STAMINA, "load_profile", retry_depth=1, retry_max_attempts=3,
                              retry_attempts=2, retry_result="success")
    assert [_failed(a) for a in attempts] == [True, False]

    # retry.attempts: one point per name, result and depth, in each library's scope (cumulative: the last export)
    points: dict[tuple[Any, ...], tuple[str, str]] = {}
    for metric in (m for m in metrics if m.name == "retry.attempts"):
        assert (metric.data_type, metric.unit) == ("Histogram", "{attempt}")
        for p in metric.points:
            key = (metric.scope, p.attributes["retry.name"], p.attributes["retry.result"], p.attributes["retry.depth"])
            points[key] = (p.values["Count"], p.values["Sum"])
    assert points == {
        (BACKOFF, "__main__.fetch_user", "success", 1): ("1", "3"),
        (BACKOFF, "__main__.read_stock", "exhausted", 2): ("2", "4"),
        (STAMINA, "__main__.fetch_order", "success", 1): ("1", "2"),
        (STAMINA, "__main__.reserve", "exhausted", 1): ("1", "2"),
        (STAMINA, "__main__.load_profile", "success", 1): ("1", "2"),
    }
