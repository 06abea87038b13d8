"""End to end: an app retrying with requests, run by ``opentelemetry-instrument`` and exporting over OTLP/HTTP (which
itself uses requests) to a real collector (rotel). Alone, and beside contrib's requests and urllib3 instrumentations
(installed here, so the launcher instruments them too unless disabled). Our own export is never traced."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.collector import RotelCollector, Span
from tests.support.http_support import Reply, ScriptedServer, server
from tests.support.processes import LAUNCHER, checked, clean_env, run

__all__ = ["server"]

_APP = """
import sys

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

session = requests.Session()
session.mount("http://", HTTPAdapter(max_retries=Retry(total=3, status_forcelist=[503], backoff_factor=0)))
print(session.get(sys.argv[1]).status_code)
"""


@pytest.mark.parametrize("contrib", [False, True], ids=["alone", "beside contrib"])
def test_requests_retries_reach_the_collector(
    tmp_path: Path, collector: RotelCollector, server: ScriptedServer, contrib: bool
) -> None:
    server.reply(Reply(503), Reply(503))
    app = tmp_path / "app.py"
    app.write_text(_APP)
    env = clean_env(
        OTEL_SERVICE_NAME="http-e2e",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint,
    )
    if not contrib:
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "requests,urllib3"
    result = checked(run([str(LAUNCHER), sys.executable, str(app), server.url("/users/1")], env))
    assert result.stdout.strip() == "200"
    assert len(server.received) == 3

    def client_spans(spans: list[Span], _metrics: object) -> list[Span] | None:
        found = sorted((s for s in spans if s.kind == "SPAN_KIND_CLIENT"), key=lambda s: s.start_ns)
        return found if len(found) == (1 if contrib else 3) else None

    spans = collector.wait_for("the GET spans", client_spans)
    # Nothing traced our export to the collector (OTLP/HTTP over requests): only the app's GETs are CLIENT spans.
    assert all(s.name == "GET" and "/v1/" not in str(s.attributes) for s in collector.spans() if s.kind == "SPAN_KIND_CLIENT")
    received = [r.headers["traceparent"].split("-")[1:3] for r in server.received]  # trace id, parent span id
    if not contrib:
        assert {s.scope for s in spans} == {"otel_resilience.urllib3"}
        assert [s.attributes["retry.attempt"] for s in spans] == [1, 2, 3]
        assert [s.attributes.get("http.request.resend_count") for s in spans] == [None, 1, 2]
        assert [s.attributes["http.response.status_code"] for s in spans] == [503, 503, 200]
        assert spans[-1].attributes["retry.attempts"] == 3 and spans[-1].attributes["retry.result"] == "success"
        assert received == [[s.trace_id, s.span_id] for s in spans]
        return
    (span,) = spans
    assert span.scope == "opentelemetry.instrumentation.requests"
    assert span.attributes["http.request.resend_count"] == 2
    assert span.attributes["retry.attempts"] == 3 and span.attributes["retry.result"] == "success"
    assert [e.name for e in span.events] == ["http.request.resend", "http.request.resend"]
    assert [e.attributes["retry.attempt"] for e in span.events] == [1, 2]
    assert received == [[span.trace_id, span.span_id]] * 3
