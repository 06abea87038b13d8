"""End to end: an app whose OpenAI call the SDK retries (503, 503, then a completion), run by
``opentelemetry-instrument`` and exporting over OTLP/HTTP to a real collector (rotel). Alone (contrib's httpx, httpx2
and openai-v2 instrumentations disabled), and beside them (installed here, so the launcher instruments them too)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.collector import Metric, RotelCollector, Span
from tests.support.http_support import Reply, ScriptedServer, server
from tests.support.processes import LAUNCHER, checked, clean_env, run
from tests.http_clients.test_http_sdks import ok_reply

__all__ = ["server"]

_APP = """
import sys

import openai

client = openai.OpenAI(api_key="test-key", base_url=sys.argv[1], max_retries=2)
completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
print(completion.choices[0].message.content)
"""

_BUSY = Reply(503, {"content-type": "application/json", "retry-after-ms": "5"}, json.dumps({"error": {}}).encode())


@pytest.mark.parametrize("contrib", [False, True], ids=["alone", "beside contrib"])
def test_openai_retries_reach_the_collector(
    tmp_path: Path, collector: RotelCollector, server: ScriptedServer, contrib: bool
) -> None:
    server.reply(_BUSY, _BUSY, ok_reply("openai", "sync"))
    app = tmp_path / "app.py"
    app.write_text(_APP)
    env = clean_env(
        OTEL_SERVICE_NAME="openai-e2e",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint,
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="requests,urllib3" + ("" if contrib else ",httpx,httpx2,openai"),
    )
    result = checked(run([str(LAUNCHER), sys.executable, str(app), server.url("/v1")], env))
    assert result.stdout.strip() == "hi"
    assert len(server.received) == 3

    def found(spans: list[Span], metrics: list[Metric]) -> tuple[list[Span], list[Metric]] | None:
        posts = sorted((s for s in spans if s.name == "POST"), key=lambda s: s.start_ns)
        attempts = [m for m in metrics if m.name == "retry.attempts"]
        return (posts, attempts) if len(posts) == 3 and attempts else None

    posts, metrics = collector.wait_for("the three POST attempts and the retry metric", found)
    (point,) = [p for m in metrics for p in m.points]
    assert point.attributes == {"retry.name": "POST 127.0.0.1", "retry.result": "success", "retry.depth": 1}
    assert {m.scope for m in metrics} == {"otel_resilience.openai"}
    received = [r.headers["traceparent"].split("-")[1:3] for r in server.received]
    assert received == [[s.trace_id, s.span_id] for s in posts]
    assert [s.attributes.get("http.request.resend_count") for s in posts] == [None, 1, 2]
    assert [r.headers["x-stainless-retry-count"] for r in server.received] == ["0", "1", "2"]
    if not contrib:
        assert {s.scope for s in posts} == {"otel_resilience.openai"}
        assert [s.attributes["retry.attempt"] for s in posts] == [1, 2, 3]
        assert [s.attributes["retry.delay"] for s in posts[:2]] == [0.005, 0.005]
        last = posts[-1].attributes
        assert (last["retry.attempts"], last["retry.max_attempts"], last["retry.result"]) == (3, 3, "success")
        return
    # Contrib's httpx2 span per attempt, enriched, under openai-v2's GenAI span; no span of ours.
    assert {s.scope for s in posts} == {"opentelemetry.instrumentation.httpx"}
    (genai,) = [s for s in collector.spans() if s.name == "chat m"]
    assert {s.parent_id for s in posts} == {genai.span_id}
    assert [[e.attributes["retry.delay"] for e in s.events if e.name == "http.request.resend"] for s in posts] == [
        [],
        [0.005],
        [0.005],
    ]
    assert not any(s.scope.startswith("otel_resilience") for s in collector.spans())
