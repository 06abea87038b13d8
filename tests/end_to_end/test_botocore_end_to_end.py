"""End to end: a boto3 app whose S3 call botocore retries (503, 503, then 200), run by ``opentelemetry-instrument`` and
exporting over OTLP/HTTP to a real collector (rotel). Alone (contrib's botocore, urllib3 and requests instrumentations
disabled), and beside contrib's botocore instrumentation (installed here, so the launcher instruments it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.collector import Metric, RotelCollector, Span
from tests.support.http_support import Reply, ScriptedServer, server
from tests.support.processes import LAUNCHER, checked, clean_env, run

__all__ = ["server"]

_APP = """
import sys

import boto3
from botocore.config import Config

s3 = boto3.client(
    "s3",
    endpoint_url=sys.argv[1],
    region_name="us-east-1",
    aws_access_key_id="AKIDEXAMPLE",
    aws_secret_access_key="dummy-secret",
    config=Config(retries={"mode": "standard", "total_max_attempts": 3}),
)
print(s3.list_buckets()["ResponseMetadata"]["RetryAttempts"])
"""

_OK = (
    b'<?xml version="1.0" encoding="UTF-8"?><ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Owner><ID>o</ID></Owner><Buckets></Buckets></ListAllMyBucketsResult>"
)
_SLOW = Reply(503, {"Content-Type": "application/xml"}, b"<Error><Code>SlowDown</Code><Message>m</Message></Error>")


@pytest.mark.parametrize("contrib", [False, True], ids=["alone", "beside contrib"])
def test_boto3_retries_reach_the_collector(
    tmp_path: Path, collector: RotelCollector, server: ScriptedServer, contrib: bool
) -> None:
    server.reply(_SLOW, _SLOW, Reply(200, {"Content-Type": "application/xml"}, _OK))
    app = tmp_path / "app.py"
    app.write_text(_APP)
    env = clean_env(
        OTEL_SERVICE_NAME="botocore-e2e",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_endpoint,
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="requests,urllib3" + ("" if contrib else ",botocore,aiobotocore"),
    )
    result = checked(run([str(LAUNCHER), sys.executable, str(app), server.url()], env))
    assert result.stdout.strip() == "2"
    assert len(server.received) == 3

    def found(spans: list[Span], metrics: list[Metric]) -> tuple[list[Span], list[Metric]] | None:
        client = sorted((s for s in spans if s.kind == "SPAN_KIND_CLIENT"), key=lambda s: s.start_ns)
        attempts = [m for m in metrics if m.name == "retry.attempts"]
        return (client, attempts) if len(client) == (1 if contrib else 3) and attempts else None

    spans, metrics = collector.wait_for("the S3.ListBuckets spans and the retry metric", found)
    assert [s.name for s in spans] == ["S3.ListBuckets"] * len(spans)
    (point,) = [p for m in metrics for p in m.points]
    assert point.attributes == {"retry.name": "S3.ListBuckets", "retry.result": "success", "retry.depth": 1}
    assert {m.scope for m in metrics} == {"otel_resilience.botocore"}
    if not contrib:
        assert {s.scope for s in spans} == {"otel_resilience.botocore"}
        assert [s.attributes["retry.attempt"] for s in spans] == [1, 2, 3]
        assert [s.attributes.get("http.request.resend_count") for s in spans] == [None, 1, 2]
        assert [s.attributes["http.response.status_code"] for s in spans] == [503, 503, 200]
        assert all(isinstance(s.attributes["retry.delay"], float) for s in spans[:2])
        assert spans[-1].attributes["retry.attempts"] == 3 and spans[-1].attributes["retry.result"] == "success"
        assert spans[-1].attributes["retry.max_attempts"] == 3
        received = [r.headers["traceparent"].split("-")[1:3] for r in server.received]
        assert received == [[s.trace_id, s.span_id] for s in spans]
        return
    (span,) = spans
    assert span.scope.startswith("opentelemetry.instrumentation.botocore")
    assert span.attributes["http.request.resend_count"] == 2
    assert span.attributes["retry.attempts"] == 3 and span.attributes["retry.result"] == "success"
    assert span.attributes["retry_attempts"] == 2  # contrib's own
    assert [e.name for e in span.events] == ["http.request.resend", "http.request.resend"]
    assert [e.attributes["retry.attempt"] for e in span.events] == [1, 2]
