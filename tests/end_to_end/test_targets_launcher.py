"""End to end through the launcher: ``opentelemetry-instrument`` with only the environment variables naming the
untouched example helpers (``examples/myapp``), exporting over OTLP to a real collector (rotel); and the example
scripts, which configure the same through code."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from otel_resilience.targets import BREAKER_TARGETS_ENV, RETRY_TARGETS_ENV
from tests.support.collector import RotelCollector, Span
from tests.support.processes import LAUNCHER, ROOT, checked, clean_env, run

EXAMPLES = ROOT / "examples"

_APP = """
from myapp.cb import Breaker
from myapp.net import Retrier

calls = 0


def fetch_user():
    global calls
    calls += 1
    if calls < 3:
        raise ConnectionError(f"down {calls}")
    return "user"


def pay():
    raise ValueError("declined")


print(Retrier(max_retries=3, delay=0.01).execute(fetch_user), calls)
breaker = Breaker(failure_threshold=1, reset_timeout=600)
for _ in range(2):
    try:
        breaker.call(pay)
    except Exception as exc:
        print(type(exc).__name__)
"""


def _launch(app: Path, **env: str) -> str:
    result = checked(
        run(
            [str(LAUNCHER), sys.executable, str(app)],
            clean_env(PYTHONPATH=str(EXAMPLES), OTEL_SERVICE_NAME="targets-e2e", OTEL_LOGS_EXPORTER="none", **env),
        )
    )
    return result.stdout + result.stderr


def test_launcher_traces_configured_targets_to_the_collector(tmp_path: Path, collector: RotelCollector) -> None:
    app = tmp_path / "app.py"
    app.write_text(_APP)
    output = _launch(
        app,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_endpoint,
        **{RETRY_TARGETS_ENV: "myapp.net:Retrier.execute", BREAKER_TARGETS_ENV: "myapp.cb:Breaker.call@state"},
    )
    assert "user 3\nValueError\nCircuitOpenError\n" in output

    def ours(spans: list[Span], _metrics: object) -> list[Span] | None:
        found = [s for s in spans if s.scope == "otel_resilience.targets"]
        return found if len(found) == 6 else None

    spans = collector.wait_for("the targets' spans", ours)
    assert all(s.resource.get("service.name") == "targets-e2e" for s in spans)
    (op,) = [s for s in spans if s.name == "retry fetch_user"]
    attempts = sorted((s for s in spans if s.name == "fetch_user"), key=lambda s: s.attributes["retry.attempt"])
    assert op.attributes["retry.name"] == "__main__.fetch_user"
    assert op.attributes["retry.attempts"] == 3 and op.attributes["retry.result"] == "success"
    assert op.attributes["retry.depth"] == 1
    assert [a.attributes["retry.attempt"] for a in attempts] == [1, 2, 3]
    assert all(a.parent_id == op.span_id and a.trace_id == op.trace_id for a in attempts)
    assert [a.attributes.get("error.type") for a in attempts] == ["ConnectionError", "ConnectionError", None]
    assert all(isinstance(a.attributes["retry.delay"], float) for a in attempts[:2])
    assert "retry.delay" not in attempts[2].attributes
    assert [e.name for e in attempts[0].events] == ["exception"]

    calls = [s for s in spans if s.name == "circuitbreaker __main__.pay"]
    assert [(c.attributes["circuitbreaker.state"], c.attributes["circuitbreaker.result"]) for c in calls] == [
        ("closed", "failure"),
        ("open", "rejected"),
    ]
    assert [e.name for e in calls[0].events] == ["circuitbreaker.state_change", "exception"]
    assert calls[1].attributes["error.type"] == "myapp.cb.CircuitOpenError"

    def retry_metric(_spans: object, metrics: list[Any]) -> list[Any] | None:
        return [m for m in metrics if m.name == "retry.attempts" and m.scope == "otel_resilience.targets"] or None

    (histogram,) = collector.wait_for("the retry.attempts histogram", retry_metric)
    (point,) = histogram.points
    assert point.attributes == {"retry.name": "__main__.fetch_user", "retry.result": "success", "retry.depth": 1}
    assert int(point.values["Count"]) == 1 and float(point.values["Sum"]) == 3.0


def test_launcher_logs_one_error_for_bad_targets_and_runs_the_app(tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text(_APP)
    output = _launch(
        app,
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
        **{RETRY_TARGETS_ENV: "myapp.net:Retrier.execute,myapp.net", BREAKER_TARGETS_ENV: "myapp.cb:Breaker.call"},
    )
    assert "user 3\nValueError\nCircuitOpenError\n" in output  # the breaker works the same, untraced
    assert output.count("otel_resilience: ignoring bad targets") == 1
    assert "retry target 'myapp.net': no ':' between the module and the qualified name" in output
    assert "breaker target 'myapp.cb:Breaker.call': the state attribute is missing" in output
    assert '"name": "retry fetch_user"' in output  # the good target is traced


@pytest.mark.parametrize("script", ["targets_retry.py", "targets_breaker.py"])
def test_example_scripts_run_traced(script: str) -> None:
    output = checked(run([sys.executable, str(EXAMPLES / script)], clean_env())).stdout
    assert ("retry " if script == "targets_retry.py" else "circuitbreaker ") in output
