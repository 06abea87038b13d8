"""The dashboard and the recording rules against a real Prometheus, scraping a real app.

A child process (tests/dashboards/_dashboard_app.py) runs a scripted scenario through tenacity and pybreaker instrumented by
otel_resilience, exposed through opentelemetry-exporter-prometheus; Prometheus (on a free loopback port, scraping it
every second, with alerts/otel_resilience.rules.yml loaded) stores it. Then every query of every dashboard panel,
every template variable and every recording rule goes through Prometheus's HTTP API and must return exactly what the
scenario implies: a query that Prometheus rejects, or that returns nothing, fails.

No timing assertion: the test waits (polling, with a generous deadline) until Prometheus has seen each step, and
evaluates the panels at fixed times. Panel queries are evaluated at the timestamp of a scrape taken after the
scenario, over a window that starts exactly at a scrape taken before it: `increase()` and `rate()` then extrapolate
nothing, so counts are exact and a rate is the count over the window. Recording rules use their own 5-minute windows,
evaluated by Prometheus when it likes: their ratios are exact (numerator and denominator come from the same scrapes),
and their rates are checked for the scenario's proportions and a bound the window allows.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboards import _dashboard_app as app
from tests.support.collector import _free_port
from tests.support.prometheus_server import Prometheus, poll, queried_metrics, tool_or_skip

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "otel_resilience.json"
RULES = ROOT / "alerts" / "otel_resilience.rules.yml"
JOB = "shop"
FETCH, SYNC, PUSH = (f"tests.dashboards._dashboard_app.{name}" for name in ("fetch", "sync", "push"))
BREAKER = app.BREAKER_NAME
EXACT = 1e-9
"""Relative tolerance of an 'exact' value: floating-point rounding only."""

# --- what the scenario implies (one round; see tests/dashboards/_dashboard_app.py) -------------------------------------------
OPERATIONS = {FETCH: app.FAST + app.RETRIED_TWICE + app.EXHAUSTED, SYNC: 1, PUSH: 2}
EXHAUSTED = {FETCH: app.EXHAUSTED, SYNC: 1, PUSH: 2}
SUCCEEDED = {name: OPERATIONS[name] - EXHAUSTED[name] for name in OPERATIONS}
ATTEMPTS = {FETCH: app.MAX_ATTEMPTS * OPERATIONS[FETCH] - 2 * app.FAST, SYNC: 2, PUSH: 4}
SUCCESS_ATTEMPTS = {FETCH: app.FAST + app.MAX_ATTEMPTS * app.RETRIED_TWICE, SYNC: 0, PUSH: 0}
ONE_ATTEMPT = {FETCH: app.FAST, SYNC: 0, PUSH: 0}
"""Operations in the le="1" bucket of retry.attempts (all of them succeeded)."""
DEPTH = {FETCH: "1", SYNC: "1", PUSH: "2"}
CALLS = {  # (state, result) -> calls through the breaker
    ("closed", "success"): app.CLOSED_SUCCESSES_BEFORE + app.CLOSED_SUCCESSES_AFTER,
    ("closed", "failure"): app.FAILURES,
    ("open", "rejected"): app.REJECTED,
    ("half_open", "success"): 1,
}
TRANSITIONS = {("closed", "open"): 1, ("open", "half_open"): 1, ("half_open", "closed"): 1}
ALL_CALLS = sum(CALLS.values())


@dataclass
class Run:
    """What the test saw: the server, and the moments at which it evaluates."""

    prometheus: Prometheus
    before: float
    """Timestamp of a scrape taken after the first round and before the second."""
    after: float
    """Timestamp of a scrape taken after the second round had ended."""
    while_open: float
    """A time at which the breaker was open (and Prometheus had seen it, rules included)."""
    rules_at: float
    """A time at which every recording rule had been evaluated on the `after` scrape."""
    metric_names: set[str]

    @property
    def window(self) -> str:
        return f"{round((self.after - self.before) * 1000)}ms"

    @property
    def seconds(self) -> float:
        return round((self.after - self.before) * 1000) / 1000


def _scrape_timestamp(prometheus: Prometheus, metric: str, at: float | None = None) -> float | None:
    result = prometheus.query(f"max(timestamp({metric}))", time.time() if at is None else at)
    return float(result[0]["value"][1]) if result else None


class AppProcess:
    def __init__(self, port: int, workdir: Path) -> None:
        self.stderr = (workdir / "app.stderr").open("w+")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from tests.dashboards._dashboard_app import main; main()", str(port)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )

    def expect(self, line: str) -> None:
        got = self.process.stdout.readline().strip() if self.process.stdout else ""
        if got != line:
            self.stderr.seek(0)
            raise AssertionError(f"the app said {got!r}, not {line!r}; its stderr:\n{self.stderr.read()}")

    def step(self, name: str) -> float:
        """Run one step of the scenario; returns when the app had finished it."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{name}\n")
        self.process.stdin.flush()
        self.expect(f"done {name}")
        return time.time()

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write("exit\n")
                self.process.stdin.close()
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()
        self.stderr.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tool_or_skip("prometheus")
    workdir = tmp_path_factory.mktemp("prometheus")
    port = _free_port()
    child = AppProcess(port, workdir)
    prometheus: Prometheus | None = None
    try:
        child.expect("ready")
        prometheus = Prometheus.start(workdir, f"127.0.0.1:{port}", [RULES], JOB)
        before = poll("a scrape of the first round", lambda: _scrape_timestamp(prometheus, "retry_attempts_count"))
        child.step("retries")
        child.step("trip")
        open_panel = _panel_expr("Breakers not closed, for")

        def seen_open() -> float | None:
            at = time.time()
            result = prometheus.query(_substitute(open_panel, "1s"), at)
            return at if result else None

        while_open = poll("the open breaker, through the 'Breakers not closed' panel", seen_open)
        done = child.step("close")
        after = poll(
            "a scrape after the scenario",
            lambda: t if (t := _scrape_timestamp(prometheus, "circuitbreaker_calls_total")) and t > done else None,
        )
        recorded = [rule["record"] for rule in _rules() if "record" in rule]

        def rules_evaluated() -> float | None:
            at = time.time()
            stamps = [_scrape_timestamp(prometheus, name, at) for name in recorded]
            return at if all(s is not None and s >= after for s in stamps) else None

        rules_at = poll("every recording rule evaluated after the scenario", rules_evaluated)
        names = prometheus.label_values("__name__", '{job="shop"}')
        yield Run(prometheus, before, after, while_open, rules_at, names)
    finally:
        child.stop()
        if prometheus is not None:
            prometheus.stop()


# --- the dashboard's queries ------------------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _panel_expr(title: str, ref: str = "A") -> str:
    (panel,) = [p for p in _panels() if p["title"] == title]
    (target,) = [t for t in panel["targets"] if t["refId"] == ref]
    return str(target["expr"])


def _substitute(expr: str, window: str) -> str:
    """The query Grafana sends with service = shop and every other variable at All (its allValue, `.*`)."""
    return (
        expr.replace("$__rate_interval", window)
        .replace("$__range", window)
        .replace("$service", JOB)
        .replace("$retry_name", ".*")
        .replace("$circuitbreaker_name", ".*")
    )


def _rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _values(result: list[dict[str, Any]], *labels: str) -> dict[Any, float]:
    """{label values (one label: the value itself): sample value} of an instant query's result."""
    out: dict[Any, float] = {}
    for sample in result:
        key = tuple(sample["metric"].get(label, "") for label in labels)
        assert key not in out, f"two samples for {key}: {result}"
        out[key[0] if len(key) == 1 else key] = float(sample["value"][1])
    return out


def _assert_values(got: dict[Any, float], expected: dict[Any, float]) -> None:
    assert set(got) == set(expected), f"got {got}, expected {expected}"
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=EXACT, abs=1e-12), f"{key}: got {got[key]}, expected {value}"


def _quantile(q: float) -> float:
    """histogram_quantile over fetch's duration buckets: every fast operation is at most 0.25 s and every operation
    with 3 attempts (two waits of WAIT) in (0.25, 0.5], so the upper quantiles interpolate in that bucket."""
    slow = app.RETRIED_TWICE + app.EXHAUSTED
    rank = q * OPERATIONS[FETCH]
    assert rank > app.FAST
    return 0.25 + (0.5 - 0.25) * (rank - app.FAST) / slow


def _expected_panels(run: Run) -> dict[tuple[str, str], tuple[tuple[str, ...], dict[Any, float]]]:
    """(panel title, refId) -> (labels the result is keyed by, {key: value}) at the `after` scrape."""
    per_second = 1 / run.seconds
    names = list(OPERATIONS)
    buckets = {"1.0": 1, "2.0": 2, "3.0": 3, "4.0": 4, "5.0": 5, "6.0": 6, "8.0": 8, "10.0": 10, "+Inf": 10**9}
    slow = [app.MAX_ATTEMPTS] * (app.RETRIED_TWICE + app.EXHAUSTED)
    attempts_of = {FETCH: [1] * app.FAST + slow, SYNC: [2], PUSH: [2, 2]}
    return {
        ("Retried operations per second, by result", "A"): (
            ("retry_result",),
            {"success": sum(SUCCEEDED.values()) * per_second, "exhausted": sum(EXHAUSTED.values()) * per_second},
        ),
        ("Attempts per second, by operation result", "A"): (
            ("retry_result",),
            {
                "success": sum(SUCCESS_ATTEMPTS.values()) * per_second,
                "exhausted": sum(ATTEMPTS[n] - SUCCESS_ATTEMPTS[n] for n in names) * per_second,
            },
        ),
        ("Attempts per operation (amplification)", "A"): (
            ("retry_name",),
            {n: ATTEMPTS[n] / OPERATIONS[n] for n in names},
        ),
        ("Distribution of attempts per operation", "A"): (
            ("le",),
            {le: sum(a <= bound for n in names for a in attempts_of[n]) for le, bound in buckets.items()},
        ),
        ("Share of operations that needed a retry", "A"): (
            ("retry_name",),
            {n: 1 - ONE_ATTEMPT[n] / OPERATIONS[n] for n in names},
        ),
        ("Share of operations that needed a retry", "B"): (
            ("retry_name",),
            {n: (SUCCEEDED[n] - ONE_ATTEMPT[n]) / OPERATIONS[n] for n in names},
        ),
        ("Share of operations exhausted", "A"): (("retry_name",), {n: EXHAUSTED[n] / OPERATIONS[n] for n in names}),
        ("Nested retries (retry.depth ≥ 2), operations per second", "A"): (
            ("retry_name", "retry_depth", "retry_result"),
            {(PUSH, "2", "exhausted"): EXHAUSTED[PUSH] * per_second},
        ),
        ("Transitions", "A"): (
            ("circuitbreaker_name", "circuitbreaker_previous_state", "circuitbreaker_state"),
            {(BREAKER, *pair): count for pair, count in TRANSITIONS.items()},
        ),
        ("Trips (closed → open) in the selected range", "A"): (
            ("circuitbreaker_name",),
            {BREAKER: TRANSITIONS[("closed", "open")]},
        ),
        ("Breaker calls per second, by result", "A"): (
            ("circuitbreaker_name", "circuitbreaker_result"),
            {
                (BREAKER, result): sum(c for (_, r), c in CALLS.items() if r == result) * per_second
                for result in {r for _, r in CALLS}
            },
        ),
        ("Rejected calls", "A"): (("circuitbreaker_name",), {BREAKER: CALLS[("open", "rejected")]}),
        ("Rejected share of calls", "A"): (
            ("circuitbreaker_name",),
            {BREAKER: CALLS[("open", "rejected")] / ALL_CALLS},
        ),
    }


def _all_targets() -> list[tuple[str, str, str]]:
    return [(p["title"], t["refId"], t["expr"]) for p in _panels() for t in p["targets"]]


def test_every_panel_query_returns_what_the_scenario_implies(run: Run) -> None:
    expected = _expected_panels(run)
    checked = set()
    for title, ref, expr in _all_targets():
        query = _substitute(expr, run.window)
        if title == "Retry duration p50 / p95 / p99":
            got = _values(run.prometheus.query(query, run.after), "retry_name")
            assert set(got) == set(OPERATIONS), (ref, got)
            q = {"A": 0.5, "B": 0.95, "C": 0.99}[ref]
            if q == 0.5:  # the median operation is a fast one: somewhere at or below 0.25 s
                assert 0 < got[FETCH] <= 0.25, got
            else:
                assert got[FETCH] == pytest.approx(_quantile(q), rel=EXACT), (ref, got)
            for name in (SYNC, PUSH):  # no waits: fast
                assert 0 < got[name] <= 0.25, (ref, got)
        elif title == "Breaker state":
            # a step well under the scrape interval, so that no scrape falls between two steps
            series = run.prometheus.query_range(query, run.before, run.after, "100ms")
            assert [s["metric"].get("circuitbreaker_name") for s in series] == [BREAKER], series
            states = [float(v) for _, v in series[0]["values"]]
            assert set(states) <= {0.0, 1.0, 2.0} and 2.0 in states and states[-1] == 0.0, states
            assert states.index(2.0) > 0, "closed before it opened"
        elif title == "Breakers not closed, for":
            got = _values(run.prometheus.query(query, run.while_open), "circuitbreaker_name")
            assert set(got) == {BREAKER} and 0 <= got[BREAKER] < 60, got
            assert not run.prometheus.query(query, run.after), "a closed breaker is listed as not closed"
        else:
            labels, values = expected[(title, ref)]
            got = _values(run.prometheus.query(query, run.after), *labels)
            _assert_values(got, values)
        checked.add((title, ref))
    assert checked == {(title, ref) for title, ref, _ in _all_targets()}
    assert set(expected) <= checked, "an expectation for a panel that no longer exists"


def test_template_variables_list_the_scenario(run: Run) -> None:
    expected = {"service": {JOB}, "retry_name": set(OPERATIONS), "circuitbreaker_name": {BREAKER}}
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["definition"])
        assert match, variable["definition"]
        selector, label = match.groups()
        got = run.prometheus.label_values(label, _substitute(selector, "1s"))
        assert got == expected.pop(variable["name"]), variable["name"]
    assert not expected, f"variables missing: {expected}"


def test_dashboard_queries_only_metrics_the_exporter_produced(run: Run) -> None:
    """Every metric a panel queries is one opentelemetry-exporter-prometheus produced for the scenario (or, for the
    'not closed' table, one that alerts/otel_resilience.rules.yml records from them; or the state gauge's name after
    the Collector, which the same selector accepts)."""
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    collector_only = {"circuitbreaker_state_ratio"}  # the Collector's name for the gauge, selected beside ours
    for title, _, expr in _all_targets():
        for name in queried_metrics(expr) - collector_only:
            assert name in run.metric_names or name in recorded, (title, name, sorted(run.metric_names))
    assert {"retry_attempts_bucket", "retry_duration_seconds_bucket", "circuitbreaker_state"} <= run.metric_names


def _rule_values(run: Run, record: str, *labels: str) -> dict[Any, float]:
    result = run.prometheus.query(record, run.rules_at)
    for sample in result:
        assert sample["metric"].get("job") == JOB, sample
    return _values(result, *labels)


def _extrapolation_bound(run: Run) -> float:
    """How far above the true count a rule's increase() over a window reaching back before the first sample can be:
    Prometheus extrapolates at most half an average scrape interval before the first sample and 1.1 of one after the
    last, over a sampled span longer than before -> after. With 1 s scrapes, at most 2 s over that span."""
    return 1 + 2 / run.seconds


def _assert_rates(run: Run, got: dict[Any, float], counts: dict[Any, float]) -> None:
    """A rule's rate over its 5-minute window: the proportions between its series are the scenario's exactly (the
    same scrapes, the same extrapolation), and each is the count over 300 s, up to the extrapolation bound."""
    assert set(got) == set(counts), (got, counts)
    first = next(iter(counts))
    for key, count in counts.items():
        assert got[key] * counts[first] == pytest.approx(got[first] * count, rel=EXACT), (key, got)
        assert count / 300 * (1 - EXACT) <= got[key] <= _extrapolation_bound(run) * count / 300, (key, got[key], count)


def test_every_recording_rule_returns_what_the_scenario_implies(run: Run) -> None:
    names = list(OPERATIONS)
    checked = set()

    def ratio(record: str, expected: dict[str, float], label: str = "retry_name") -> None:
        _assert_values(_rule_values(run, record, label), expected)
        checked.add(record)

    _assert_rates(
        run,
        _rule_values(run, "job_retry_name_retry_result:retry_operations:rate5m", "retry_name", "retry_result"),
        {(n, r): c for n in names for r, c in (("success", SUCCEEDED[n]), ("exhausted", EXHAUSTED[n])) if c},
    )
    checked.add("job_retry_name_retry_result:retry_operations:rate5m")
    _assert_rates(
        run,
        _rule_values(run, "job_retry_name_retry_result:retry_attempts:rate5m", "retry_name", "retry_result"),
        {
            (n, r): c
            for n in names
            for r, c in (("success", SUCCESS_ATTEMPTS[n]), ("exhausted", ATTEMPTS[n] - SUCCESS_ATTEMPTS[n]))
            if c
        },
    )
    checked.add("job_retry_name_retry_result:retry_attempts:rate5m")
    ratio("job_retry_name:retry_attempts_per_operation:ratio_rate5m", {n: ATTEMPTS[n] / OPERATIONS[n] for n in names})
    ratio("job_retry_name:retry_retried:ratio_rate5m", {n: 1 - ONE_ATTEMPT[n] / OPERATIONS[n] for n in names})
    ratio(
        "job_retry_name:retry_recovered:ratio_rate5m",
        {n: (SUCCEEDED[n] - ONE_ATTEMPT[n]) / OPERATIONS[n] for n in names},
    )
    ratio("job_retry_name:retry_exhausted:ratio_rate5m", {n: EXHAUSTED[n] / OPERATIONS[n] for n in names})
    ratio("job_retry_name:retry_nested_exhausted:ratio_rate5m", {PUSH: 1.0})
    ratio("job_retry_name:retry_nested_attempts_per_operation:ratio_rate5m", {PUSH: ATTEMPTS[PUSH] / OPERATIONS[PUSH]})
    _assert_rates(
        run,
        _rule_values(
            run,
            "job_circuitbreaker_name_circuitbreaker_result:circuitbreaker_calls:rate5m",
            "circuitbreaker_name",
            "circuitbreaker_result",
        ),
        {(BREAKER, r): sum(c for (_, res), c in CALLS.items() if res == r) for r in ("success", "failure", "rejected")},
    )
    checked.add("job_circuitbreaker_name_circuitbreaker_result:circuitbreaker_calls:rate5m")
    ratio(
        "job_circuitbreaker_name:circuitbreaker_rejected:ratio_rate5m",
        {BREAKER: CALLS[("open", "rejected")] / ALL_CALLS},
        "circuitbreaker_name",
    )
    trips = _rule_values(run, "job_instance_circuitbreaker_name:circuitbreaker_trips:increase1h", "circuitbreaker_name")
    # one trip in this round (the first round's is the baseline), extrapolated
    assert set(trips) == {BREAKER} and 1 <= trips[BREAKER] <= _extrapolation_bound(run), trips
    checked.add("job_instance_circuitbreaker_name:circuitbreaker_trips:increase1h")
    last_closed = _rule_values(
        run, "job_instance_circuitbreaker_name:circuitbreaker_last_closed:timestamp", "circuitbreaker_name"
    )
    # the breaker closed again after it was seen open, and Prometheus saw that
    assert set(last_closed) == {BREAKER} and run.while_open < last_closed[BREAKER] <= run.rules_at, last_closed
    checked.add("job_instance_circuitbreaker_name:circuitbreaker_last_closed:timestamp")

    assert checked == {rule["record"] for rule in _rules() if "record" in rule}
    unhealthy = [r for r in run.prometheus.rules() if r.get("health") != "ok"]
    assert not unhealthy, unhealthy
