"""dashboards/otel_resilience.json, checked for structure: what Grafana needs to import it (a datasource variable,
template variables for service, retry.name and circuitbreaker.name), a query in every panel, only defined variables,
and every query filtered by the variables. tests/dashboards/test_dashboard_live.py runs the queries on a real Prometheus."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.prometheus_server import queried_metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "otel_resilience.json"
BUILT_INS = {"__rate_interval", "__range", "__interval", "__all"}
"""Grafana's own: the rate window, the time range, the step, and the "All" value a variable is set to."""
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")
SELECTOR = re.compile(r'\b(retry_\w+|circuitbreaker_\w+)\{([^}]*)\}|\{__name__=~"(\w+)\|[\w|]+",([^}]*)\}')
"""A selector and its matchers: `metric{...}`, or `{__name__=~"metric|other", ...}` (the state gauge's two names)."""


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def test_variables(dashboard: dict[str, Any]) -> None:
    defined = variables(dashboard)
    assert defined["datasource"]["type"] == "datasource" and defined["datasource"]["query"] == "prometheus"
    labels = {"service": "service", "retry_name": "retry.name", "circuitbreaker_name": "circuitbreaker.name"}
    for name, label in labels.items():
        variable = defined[name]
        assert variable["type"] == "query" and variable["label"] == label
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert variable["includeAll"] and variable["multi"] and variable["allValue"] == ".*"
        assert variable["definition"] == variable["query"]["query"]
        assert re.fullmatch(r"label_values\(.+, \w+\)", variable["definition"])


def test_every_panel_has_a_query_on_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"], panel["title"]
        assert panel["description"].strip(), panel["title"]
        assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_every_variable_used_is_defined(dashboard: dict[str, Any]) -> None:
    defined = set(variables(dashboard)) | BUILT_INS
    used = {a or b for a, b in VARIABLE.findall(json.dumps(dashboard))}
    assert used - defined == set()
    assert set(variables(dashboard)) <= used, "a variable that nothing uses"


def test_every_selector_follows_the_variables(dashboard: dict[str, Any]) -> None:
    """Picking a service, a retry.name or a breaker narrows every panel that shows it."""
    for panel in panels(dashboard):
        for target in panel["targets"]:
            selectors = SELECTOR.findall(target["expr"])
            assert selectors, (panel["title"], target["expr"])
            for named, named_matchers, by_regex, regex_matchers in selectors:
                metric, matchers = (named, named_matchers) if named else (by_regex, regex_matchers)
                assert 'job=~"$service"' in matchers, (panel["title"], metric)
                own = "retry_name" if metric.startswith("retry_") else "circuitbreaker_name"
                assert f'{own}=~"${own}"' in matchers, (panel["title"], metric)


def test_panels_answer_on_calls_questions(dashboard: dict[str, Any]) -> None:
    """The panels the dashboard promises (docs/dashboards.md lists them), with the metrics each needs."""
    by_title = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels(dashboard)}
    needs = {
        "Retried operations per second, by result": {"retry_attempts_count"},
        "Attempts per second, by operation result": {"retry_attempts_sum"},
        "Distribution of attempts per operation": {"retry_attempts_bucket"},
        "Retry duration p50 / p95 / p99": {"retry_duration_seconds_bucket"},
        "Share of operations that needed a retry": {"retry_attempts_bucket", "retry_attempts_count"},
        "Share of operations exhausted": {"retry_attempts_count"},
        "Breaker state": {"circuitbreaker_state"},
        "Transitions": {"circuitbreaker_transitions_total"},
        "Rejected calls": {"circuitbreaker_calls_total"},
    }
    for title, metrics in needs.items():
        assert metrics <= queried_metrics(by_title[title]), title
    assert {p["type"] for p in panels(dashboard)} >= {"timeseries", "state-timeline", "bargauge"}
