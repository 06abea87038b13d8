"""alerts/otel_resilience.rules.yml: valid for Prometheus (``promtool check rules``), each alert proven on synthetic
series (``promtool test rules`` on tests/dashboards/promtool/*.test.yml: it fires on the series that should fire it and stays
quiet on a healthy one and on a recovered one), and written so that on-call can use it (summary, a description that
says what to look at next, a documented threshold that can be overridden, ratios as recording rules)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.prometheus_server import tool_or_skip

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "alerts" / "otel_resilience.rules.yml"
UNIT_TESTS = sorted((ROOT / "tests" / "dashboards" / "promtool").glob("*.test.yml"))
DOCS = ROOT / "docs" / "dashboards.md"
THRESHOLD = re.compile(r"\(otel_resilience:threshold:(\w+) or on \(\) vector\(([0-9.]+)\)\)")


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool_or_skip("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_promtool_check_rules() -> None:
    overrides = (str(p) for p in (ROOT / "tests" / "dashboards" / "promtool").glob("*.rules.yml"))
    result = promtool("check", "rules", str(RULES), *overrides)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    assert UNIT_TESTS
    result = promtool("test", "rules", *(str(p) for p in UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS), result.stdout


def _alert_tests() -> list[dict[str, Any]]:
    """The unit tests of the shipped thresholds (overrides.test.yml proves only that a user's threshold wins)."""
    return list(yaml.safe_load((ROOT / "tests" / "dashboards" / "promtool" / "alerts.test.yml").read_text())["tests"])


def _subject(labels: dict[str, Any]) -> str:
    return str(labels.get("retry_name") or labels.get("circuitbreaker_name"))


def _series_subjects(test: dict[str, Any]) -> set[str]:
    names = set()
    for series in test["input_series"]:
        match = re.search(r'(?:retry_name|circuitbreaker_name)="([^"]+)"', series["series"])
        assert match, series
        names.add(match.group(1))
    return names


@pytest.mark.parametrize("alert", [rule["alert"] for rule in alerts()])
def test_every_alert_fires_and_stays_quiet_on_healthy_and_recovered_series(alert: str) -> None:
    """For each alert, some unit test has it firing, and beside the firing series a healthy one that never fires and
    a recovered one that fired and then stopped."""
    cases = [
        (test, case)
        for test in _alert_tests()
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert
    ]
    assert any(case["exp_alerts"] for _, case in cases), f"no unit test fires {alert}"
    for test in {id(t): t for t, _ in cases}.values():
        checks = sorted((c for c in test["alert_rule_test"] if c["alertname"] == alert), key=lambda c: _minutes(c))
        firing = [{_subject(a["exp_labels"]) for a in c["exp_alerts"]} for c in checks]
        ever = set().union(*firing)
        healthy = _series_subjects(test) - ever
        recovered = {name for name in ever if any(name in f for f in firing) and name not in firing[-1]}
        assert healthy, f"{alert} ({test['name']}): no healthy series that stays quiet"
        assert recovered, f"{alert} ({test['name']}): no series that fires, recovers and goes quiet"


def _minutes(case: dict[str, Any]) -> int:
    value = str(case["eval_time"])
    assert value.endswith("m"), value
    return int(value[:-1])


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_every_alert_is_usable_on_call(alert: dict[str, Any]) -> None:
    annotations = alert["annotations"]
    assert annotations["summary"].strip()
    assert "Next:" in annotations["description"], "the description says what to look at next"
    assert alert["labels"]["severity"] in ("warning", "critical")
    thresholds = THRESHOLD.findall(alert["expr"])
    assert len(thresholds) == 1, "one threshold, overridable by recording otel_resilience:threshold:<name>"
    ((name, default),) = thresholds
    assert f"otel_resilience:threshold:{name}, default {default}" in " ".join(annotations["description"].split())


def test_thresholds_are_documented_with_their_defaults() -> None:
    text = DOCS.read_text()
    for alert in alerts():
        ((name, default),) = THRESHOLD.findall(alert["expr"])
        row = rf"\| `{alert['alert']}` \|.*\| `otel_resilience:threshold:{name}` \| {re.escape(default)}\b"
        assert re.search(row, text), (
            f"docs/dashboards.md has no row for {alert['alert']} with threshold {name} = {default}"
        )


def test_ratios_are_recording_rules() -> None:
    """An alert compares a recorded series (or a plain increase) with its threshold: every ratio it uses is a
    recording rule, which dashboards and ad-hoc queries can reuse."""
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for alert in alerts():
        assert "/" not in alert["expr"], alert["alert"]
        for name in re.findall(r"\b[a-z_]+:[a-z_]+:[a-z_0-9]+\b", alert["expr"]):
            assert name.startswith("otel_resilience:threshold:") or name in recorded, (alert["alert"], name)
    assert {rule["record"] for rule in rules() if "ratio" in rule.get("record", "")} >= {
        "job_retry_name:retry_attempts_per_operation:ratio_rate5m",
        "job_retry_name:retry_exhausted:ratio_rate5m",
        "job_retry_name:retry_nested_exhausted:ratio_rate5m",
        "job_circuitbreaker_name:circuitbreaker_rejected:ratio_rate5m",
    }


def test_the_budget_alert_selects_the_label_the_instrumentation_records() -> None:
    """RetryBudgetExhausted counts the retry points that carry ``retry.budget_exhausted=true`` (botocore's adapter
    records it when the retry quota ends a call): its selector must be that attribute as Prometheus spells it."""
    from otel_resilience import semconv

    (rule,) = [rule for rule in alerts() if rule["alert"] == "RetryBudgetExhausted"]
    label = semconv.RETRY_BUDGET_EXHAUSTED.replace(".", "_")
    assert f'retry_attempts_count{{{label}="true"}}' in rule["expr"]
