"""botocore (boto3) and aiobotocore: each attempt of botocore's retry loop is one attempt of one API call. Alone, one
CLIENT span per attempt named after the call; beside contrib's botocore instrumentation, its one span per call is
enriched and nothing else is made. S3 (XML) and DynamoDB (JSON) against real loopback servers scripted per test, with
dummy credentials; botocore's ``time.sleep`` (and aiobotocore's ``asyncio.sleep``) recorded, not waited, so the
delays botocore chose are known exactly."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
import pytest
import tenacity
from aiobotocore.session import get_session
from botocore.config import Config
from opentelemetry.instrumentation.botocore import AiobotocoreInstrumentor, BotocoreInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, StatusCode

from otel_resilience import semconv
from otel_resilience.core.http_loop import LoopCall
from otel_resilience.instrumentation.aiobotocore import AiobotocoreRetryInstrumentor
from otel_resilience.instrumentation.botocore import BotocoreRetryInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from otel_resilience.instrumentation.urllib3 import Urllib3RetryInstrumentor
from tests.conftest import Otel
from tests.support.evidence import runs_with_injected_failure
from tests.support.http_support import (
    Reply,
    ScriptedServer,
    assert_attributes,
    assert_no_client_in_client,
    closed_port,
    events_named,
    loopback_attempt,
    server,
)

__all__ = ["server"]

S3_OK = (
    b'<?xml version="1.0" encoding="UTF-8"?><ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Owner><ID>o</ID></Owner><Buckets><Bucket><Name>b</Name></Bucket></Buckets></ListAllMyBucketsResult>"
)
S3_503 = b"<Error><Code>ServiceUnavailable</Code><Message>try later</Message></Error>"
JSON = {"Content-Type": "application/x-amz-json-1.0"}
DDB_OK = json.dumps({"TableNames": ["t"]}).encode()
DDB_THROTTLED = json.dumps({"__type": "com.amazonaws.dynamodb.v20120810#ThrottlingException", "message": "slow"}).encode()
DDB_503 = json.dumps({"__type": "ServiceUnavailable", "message": "try later"}).encode()

CONTRIB_SCOPE = "opentelemetry.instrumentation.botocore"


def s3_reply(status: int = 200) -> Reply:
    return Reply(status, {"Content-Type": "application/xml"}, S3_OK if status == 200 else S3_503)


def ddb_reply(status: int = 200, body: bytes | None = None, **headers: str) -> Reply:
    return Reply(status, {**JSON, **headers}, body if body is not None else (DDB_OK if status == 200 else DDB_503))


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """botocore sleeps through ``time.sleep`` (aiobotocore through ``asyncio.sleep``): recorded, not waited."""
    calls: list[float] = []

    async def async_sleep(seconds: float, *args: Any) -> None:
        calls.append(seconds)

    monkeypatch.setattr(time, "sleep", calls.append)
    monkeypatch.setattr(asyncio, "sleep", async_sleep)
    return calls


@pytest.fixture(params=["alone", "beside contrib"])
def combination(request: pytest.FixtureRequest, otel: Otel) -> Iterator[str]:
    """Ours for botocore and aiobotocore, with contrib's botocore and aiobotocore instrumentations or without."""
    BotocoreRetryInstrumentor().instrument(**otel.kwargs())
    AiobotocoreRetryInstrumentor().instrument(**otel.kwargs())
    if request.param == "beside contrib":
        BotocoreInstrumentor().instrument(**otel.kwargs())
        AiobotocoreInstrumentor().instrument(**otel.kwargs())
    yield request.param
    if request.param == "beside contrib":
        BotocoreInstrumentor().uninstrument()
        AiobotocoreInstrumentor().uninstrument()
    AiobotocoreRetryInstrumentor().uninstrument()  # in reverse: both wrap botocore's RetryContext
    BotocoreRetryInstrumentor().uninstrument()


def config(mode: str = "standard", attempts: int = 3, **extra: Any) -> Config:
    return Config(retries={"mode": mode, "total_max_attempts": attempts}, **extra)


def client(service: str, url: str, cfg: Config | None = None) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="dummy-secret",
        config=cfg or config(),
    )


def call(service: str, url: str, cfg: Config | None = None) -> Any:
    """The API call of `service` made by boto3: its value, or the exception it raised."""
    c = client(service, url, cfg)
    try:
        return c.list_buckets() if service == "s3" else c.list_tables()
    except Exception as exc:  # noqa: BLE001 - the outcome is what the test compares
        return exc


async def _async_call(service: str, url: str, cfg: Config) -> Any:
    session = get_session()
    async with session.create_client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="dummy-secret",
        config=cfg,
    ) as c:
        try:
            return await (c.list_buckets() if service == "s3" else c.list_tables())
        except Exception as exc:  # noqa: BLE001
            return exc


def run_call(kind: str, service: str, url: str, cfg: Config | None = None) -> Any:
    if kind == "sync":
        return call(service, url, cfg)
    return asyncio.run(_async_call(service, url, cfg or config()))


def client_spans(otel: Otel) -> list[ReadableSpan]:
    return sorted((s for s in otel.spans() if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)


NAMES = {"s3": ("S3", "ListBuckets", "GET", "/"), "dynamodb": ("DynamoDB", "ListTables", "POST", "/")}


def ours(server_port: int, service: str, number: int, **extra: Any) -> dict[str, Any]:
    """The attributes of our CLIENT span for attempt `number` of `service`'s call to the loopback server."""
    rpc_service, method, http_method, path = NAMES[service]
    call_attributes = {
        semconv.RPC_SYSTEM: "aws-api",
        semconv.RPC_SERVICE: rpc_service,
        semconv.RPC_METHOD: method,
        semconv.CLOUD_REGION: "us-east-1",
    }
    return loopback_attempt(server_port, number, path, http_method, **call_attributes, **extra)


def failed(status: int, delay: float) -> dict[str, Any]:
    return {semconv.HTTP_RESPONSE_STATUS_CODE: status, semconv.ERROR_TYPE: str(status), semconv.RETRY_DELAY: delay}


def outcome(attempts: int, result: str, maximum: int, **extra: Any) -> dict[str, Any]:
    return {semconv.RETRY_ATTEMPTS: attempts, semconv.RETRY_RESULT: result, semconv.RETRY_MAX_ATTEMPTS: maximum, **extra}


def metric_points(otel: Otel, name: str) -> list[tuple[dict[str, Any], Any]]:
    return [(dict(p.attributes), p) for p in otel.metric_points(name)]


def contrib_span(otel: Otel) -> ReadableSpan:
    (span,) = [s for s in otel.spans() if s.instrumentation_scope.name.startswith(CONTRIB_SCOPE)]
    return span


# The attributes contrib's botocore instrumentation sets on its span, as it sets them with us or without us.
def contrib_attributes(span: ReadableSpan) -> dict[str, Any]:
    ours_names = {
        semconv.HTTP_REQUEST_RESEND_COUNT,
        semconv.RETRY_ATTEMPTS,
        semconv.RETRY_RESULT,
        semconv.RETRY_MAX_ATTEMPTS,
        semconv.RETRY_BUDGET_EXHAUSTED,
    }
    return {k: v for k, v in (span.attributes or {}).items() if k not in ours_names}


# --- 503, 503, 200 ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("service", ["s3", "dynamodb"])
def test_503_503_200(
    combination: str, otel: Otel, server: ScriptedServer, sleeps: list[float], service: str, kind: str
) -> None:
    reply = s3_reply if service == "s3" else ddb_reply
    server.reply(reply(503), reply(503), reply(200))
    with otel.tracer_provider.get_tracer("test").start_as_current_span("caller") as caller:
        value = run_call(kind, service, server.url())
    assert not isinstance(value, Exception), value
    assert value["ResponseMetadata"]["RetryAttempts"] == 2
    assert len(server.received) == 3 and len(sleeps) == 2
    spans = client_spans(otel)
    assert_no_client_in_client(otel.spans())
    scope = f"otel_resilience.{'botocore' if kind == 'sync' else 'aiobotocore'}"
    points = metric_points(otel, semconv.METRIC_RETRY_ATTEMPTS)
    name = "S3.ListBuckets" if service == "s3" else "DynamoDB.ListTables"
    assert [(a, p.sum) for a, p in points] == [
        ({semconv.RETRY_NAME: name, semconv.RETRY_RESULT: "success", semconv.RETRY_DEPTH: 1}, 3)
    ]
    if combination == "alone":
        assert [s.name for s in spans] == [name] * 3
        assert_attributes(spans[0], ours(server.port, service, 1, **failed(503, sleeps[0])))
        assert_attributes(spans[1], ours(server.port, service, 2, **failed(503, sleeps[1])))
        assert_attributes(
            spans[2], ours(server.port, service, 3, **{semconv.HTTP_RESPONSE_STATUS_CODE: 200}, **outcome(3, "success", 3))
        )
        for span in spans:  # siblings under the caller, ours
            assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
            assert span.instrumentation_scope.name == scope
        assert [s.status.status_code for s in spans] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
        # Each attempt carried its own trace context to the server.
        sent = [r.headers["traceparent"].split("-")[2] for r in server.received]
        assert sent == [f"{s.get_span_context().span_id:016x}" for s in spans]
        return
    (span,) = spans
    assert span is contrib_span(otel) and span.name == name
    assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
    assert span.attributes[semconv.HTTP_REQUEST_RESEND_COUNT] == 2
    assert {k: span.attributes[k] for k in (semconv.RETRY_ATTEMPTS, semconv.RETRY_RESULT, semconv.RETRY_MAX_ATTEMPTS)} == {
        semconv.RETRY_ATTEMPTS: 3,
        semconv.RETRY_RESULT: "success",
        semconv.RETRY_MAX_ATTEMPTS: 3,
    }
    assert span.attributes["retry_attempts"] == 2  # contrib's own, untouched
    assert events_named(span, semconv.HTTP_RESEND_EVENT) == [
        {semconv.RETRY_ATTEMPT: 1, semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503", semconv.RETRY_DELAY: sleeps[0]},
        {semconv.RETRY_ATTEMPT: 2, semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503", semconv.RETRY_DELAY: sleeps[1]},
    ]
    # Contrib injected its own context (X-Ray); we injected nothing.
    assert all("traceparent" not in r.headers for r in server.received)


# --- exhaustion, errors, waits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_exhausted_503s(combination: str, otel: Otel, server: ScriptedServer, sleeps: list[float], kind: str) -> None:
    server.default = s3_reply(503)
    error = run_call(kind, "s3", server.url())
    assert isinstance(error, botocore.exceptions.ClientError)
    assert error.response["ResponseMetadata"]["MaxAttemptsReached"] is True
    assert len(server.received) == 3
    spans = client_spans(otel)
    points = metric_points(otel, semconv.METRIC_RETRY_ATTEMPTS)
    assert [(a[semconv.RETRY_RESULT], p.sum) for a, p in points] == [("exhausted", 3)]
    if combination == "alone":
        assert_attributes(spans[-1], ours(server.port, "s3", 3, **{semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503"}, **outcome(3, "exhausted", 3)))
        assert [s.attributes[semconv.RETRY_DELAY] for s in spans[:-1]] == sleeps
        return
    span = contrib_span(otel)
    assert (span.attributes[semconv.RETRY_RESULT], span.attributes[semconv.RETRY_ATTEMPTS]) == ("exhausted", 3)
    assert span.status.status_code is StatusCode.ERROR  # contrib's, as contrib set it


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_connection_refused_is_retried_then_exhausted(combination: str, otel: Otel, sleeps: list[float], kind: str) -> None:
    port = closed_port()
    error = run_call(kind, "dynamodb", f"http://127.0.0.1:{port}", config(attempts=2))
    assert isinstance(error, botocore.exceptions.EndpointConnectionError)
    assert len(sleeps) == 1
    spans = client_spans(otel)
    error_type = "botocore.exceptions.EndpointConnectionError"
    if combination == "alone":
        first, second = spans
        assert first.attributes[semconv.ERROR_TYPE] == error_type
        assert first.attributes[semconv.RETRY_DELAY] == sleeps[0]
        assert (second.attributes[semconv.RETRY_RESULT], second.attributes[semconv.RETRY_ATTEMPTS]) == ("exhausted", 2)
        assert events_named(second, semconv.EXCEPTION_EVENT)[0][semconv.EXCEPTION_TYPE] == error_type
        return
    span = contrib_span(otel)
    assert events_named(span, semconv.HTTP_RESEND_EVENT) == [
        {semconv.RETRY_ATTEMPT: 1, semconv.ERROR_TYPE: error_type, semconv.RETRY_DELAY: sleeps[0]}
    ]
    assert (span.attributes[semconv.RETRY_RESULT], span.attributes[semconv.RETRY_ATTEMPTS]) == ("exhausted", 2)


def test_read_timeout_is_retried(combination: str, otel: Otel, server: ScriptedServer, sleeps: list[float]) -> None:
    server.reply(Reply(hang=True), s3_reply(200))
    value = call("s3", server.url(), config(read_timeout=0.2))
    assert not isinstance(value, Exception), value
    assert len(server.received) == 2
    if combination == "alone":
        first, second = client_spans(otel)
        assert first.attributes[semconv.ERROR_TYPE] == "botocore.exceptions.ReadTimeoutError"
        assert second.attributes[semconv.RETRY_RESULT] == "success"
    else:
        (event,) = events_named(contrib_span(otel), semconv.HTTP_RESEND_EVENT)
        assert event[semconv.ERROR_TYPE] == "botocore.exceptions.ReadTimeoutError"


def test_throttled_429_with_retry_after_is_the_delay_botocore_slept(
    combination: str, otel: Otel, server: ScriptedServer, sleeps: list[float]
) -> None:
    server.reply(ddb_reply(429, DDB_THROTTLED, **{"Retry-After": "1", "x-amz-retry-after": "1500"}), ddb_reply(200))
    value = call("dynamodb", server.url())
    assert not isinstance(value, Exception), value
    assert len(sleeps) == 1
    if combination == "alone":
        first, second = client_spans(otel)
        assert first.attributes[semconv.RETRY_DELAY] == sleeps[0]
        assert first.attributes[semconv.ERROR_TYPE] == "429"
        assert second.attributes[semconv.RETRY_RESULT] == "success"
    else:
        (event,) = events_named(contrib_span(otel), semconv.HTTP_RESEND_EVENT)
        assert event[semconv.RETRY_DELAY] == sleeps[0]


def test_an_error_botocore_does_not_retry_is_not_retried(combination: str, otel: Otel, server: ScriptedServer) -> None:
    server.reply(ddb_reply(400, json.dumps({"__type": "ValidationException", "message": "no"}).encode()))
    error = call("dynamodb", server.url())
    assert isinstance(error, botocore.exceptions.ClientError)
    span = client_spans(otel)[-1]
    assert (span.attributes[semconv.RETRY_RESULT], span.attributes[semconv.RETRY_ATTEMPTS]) == ("not_retried", 1)
    points = metric_points(otel, semconv.METRIC_RETRY_ATTEMPTS)
    assert [a[semconv.RETRY_RESULT] for a, _ in points] == ["not_retried"]


def test_first_attempt_success_records_no_metric_points(combination: str, otel: Otel, server: ScriptedServer) -> None:
    server.default = s3_reply(200)
    assert not isinstance(call("s3", server.url()), Exception)
    (span,) = client_spans(otel)
    assert (span.attributes[semconv.RETRY_RESULT], span.attributes[semconv.RETRY_ATTEMPTS]) == ("success", 1)
    assert metric_points(otel, semconv.METRIC_RETRY_ATTEMPTS) == []


@pytest.mark.parametrize(("mode", "attempts", "expected_max"), [("legacy", 3, 3), ("adaptive", 3, 3), ("standard", 4, 4)])
def test_every_retry_mode(
    combination: str, otel: Otel, server: ScriptedServer, sleeps: list[float], mode: str, attempts: int, expected_max: int
) -> None:
    server.default = s3_reply(503)
    error = call("s3", server.url(), config(mode, attempts))
    assert isinstance(error, botocore.exceptions.ClientError)
    assert len(server.received) == attempts and len(sleeps) == attempts - 1
    span = client_spans(otel)[-1]
    assert span.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert span.attributes[semconv.RETRY_ATTEMPTS] == attempts
    assert span.attributes[semconv.RETRY_MAX_ATTEMPTS] == expected_max
    if combination == "alone":
        assert [s.attributes[semconv.RETRY_DELAY] for s in client_spans(otel)[:-1]] == sleeps
    else:
        delays = [e[semconv.RETRY_DELAY] for e in events_named(span, semconv.HTTP_RESEND_EVENT)]
        assert delays == sleeps


# --- the retry quota: a retry budget -------------------------------------------------------------------------------


def test_empty_retry_quota_is_exhausted_before_the_limit_and_says_so(
    combination: str, otel: Otel, server: ScriptedServer, sleeps: list[float]
) -> None:
    """The standard mode's retry quota is shared by the client's calls: calls failing with 503 drain it, until it
    refuses a retry. That call stops before its attempt limit: ``exhausted``, ``retry.budget_exhausted``."""
    server.default = s3_reply(503)
    c = client("s3", server.url(), config(attempts=3))
    refused_at = None
    for number in range(1, 100):
        before = len(server.received)
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            c.list_buckets()
        if caught.value.response["ResponseMetadata"].get("RetryQuotaReached"):
            refused_at = number
            assert len(server.received) - before < 3  # stopped before the limit
            break
    assert refused_at is not None
    made = len(server.received) - before
    budget = [
        s for s in otel.spans() if s.attributes and s.attributes.get(semconv.RETRY_BUDGET_EXHAUSTED) is not None
    ]
    (span,) = budget
    assert span.attributes[semconv.RETRY_BUDGET_EXHAUSTED] is True
    assert (span.attributes[semconv.RETRY_RESULT], span.attributes[semconv.RETRY_ATTEMPTS]) == ("exhausted", made)
    assert span.attributes[semconv.RETRY_MAX_ATTEMPTS] == 3
    if combination == "beside contrib":
        assert span.instrumentation_scope.name.startswith(CONTRIB_SCOPE)
    points = metric_points(otel, semconv.METRIC_RETRY_ATTEMPTS)
    flagged = [a for a, _ in points if a.get(semconv.RETRY_BUDGET_EXHAUSTED)]
    assert flagged == [
        {semconv.RETRY_NAME: "S3.ListBuckets", semconv.RETRY_RESULT: "exhausted", semconv.RETRY_DEPTH: 1, semconv.RETRY_BUDGET_EXHAUSTED: True}
    ]
    durations = [a for a, _ in metric_points(otel, semconv.METRIC_RETRY_DURATION) if a.get(semconv.RETRY_BUDGET_EXHAUSTED)]
    assert len(durations) == 1


# --- beside contrib: nothing of contrib's changes --------------------------------------------------------------------


def _contrib_only(otel: Otel, server: ScriptedServer, replies: list[Reply], ours: bool) -> dict[str, Any]:
    otel.exporter.clear()
    server.script[:] = list(replies)
    BotocoreInstrumentor().instrument(**otel.kwargs())
    if ours:
        BotocoreRetryInstrumentor().instrument(**otel.kwargs())
    try:
        call("s3", server.url())
    finally:
        if ours:
            BotocoreRetryInstrumentor().uninstrument()
        BotocoreInstrumentor().uninstrument()
    span = contrib_span(otel)
    attributes = contrib_attributes(span)
    attributes.pop("aws.request_id", None)
    return {"name": span.name, "kind": span.kind, "status": span.status.status_code, "attributes": attributes}


@pytest.mark.parametrize("replies", [[503, 503, 200], [503, 503, 503], [200]], ids=str)
def test_contrib_span_keeps_every_attribute_contrib_set(
    otel: Otel, server: ScriptedServer, sleeps: list[float], replies: list[int]
) -> None:
    script = [s3_reply(status) for status in replies]
    assert _contrib_only(otel, server, script, ours=True) == _contrib_only(otel, server, script, ours=False)


def test_beside_contrib_urllib3_no_client_span_inside_ours(otel: Otel, server: ScriptedServer, sleeps: list[float]) -> None:
    """Contrib's urllib3 instrumentation under botocore alone would open a CLIENT span inside our attempt's: our
    attempt runs with HTTP instrumentation suppressed, as contrib's botocore span does. Our urllib3 instrumentation
    sees botocore's ``Retry(False)`` requests as plain and shows nothing of them."""
    server.reply(s3_reply(503), s3_reply(200))
    BotocoreRetryInstrumentor().instrument(**otel.kwargs())
    Urllib3RetryInstrumentor().instrument(**otel.kwargs())
    URLLib3Instrumentor().instrument(**otel.kwargs())
    try:
        assert not isinstance(call("s3", server.url()), Exception)
    finally:
        URLLib3Instrumentor().uninstrument()
        Urllib3RetryInstrumentor().uninstrument()
        BotocoreRetryInstrumentor().uninstrument()
    assert [s.name for s in otel.spans()] == ["S3.ListBuckets", "S3.ListBuckets"]
    assert_no_client_in_client(otel.spans())


# --- behaviour identity ----------------------------------------------------------------------------------------------


class _OwnRandomIds(IdGenerator):
    """Span and trace ids from a source of their own, so the test's seeded global ``random`` (botocore's jitter) is
    only botocore's."""

    def __init__(self) -> None:
        self._random = random.Random()

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1


SCENARIOS = {
    "503, 503, 200": ("s3", [503, 503, 200]),
    "exhausted": ("s3", [503, 503, 503]),
    "ddb 503, 200": ("dynamodb", [503, 200]),
    "refused": ("refused", []),
}


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("contrib", [False, True], ids=["alone", "beside contrib"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_behaviour_is_identical_with_and_without_instrumentation(
    server: ScriptedServer, sleeps: list[float], scenario: str, contrib: bool, kind: str
) -> None:
    service, statuses = SCENARIOS[scenario]
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(id_generator=_OwnRandomIds())
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    providers = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}

    def run() -> tuple[Any, ...]:
        server.received.clear()
        sleeps.clear()
        reply = s3_reply if service == "s3" else ddb_reply
        server.script[:] = [reply(status) for status in statuses]
        url = f"http://127.0.0.1:{closed_port()}" if service == "refused" else server.url()
        random.seed(7)  # botocore's jitter draws from the global random: the same waits only if we draw nothing
        value = run_call(kind, "dynamodb" if service == "refused" else service, url)
        if isinstance(value, Exception):
            shown: Any = (type(value), str(value).replace(url, "URL"))
        else:
            shown = {k: v for k, v in value.items() if k != "ResponseMetadata"}
            shown["RetryAttempts"] = value["ResponseMetadata"]["RetryAttempts"]
        return shown, len(server.received), list(sleeps)

    bare = run()
    instrumentors: list[Any] = [BotocoreRetryInstrumentor(), AiobotocoreRetryInstrumentor()]
    if contrib:
        instrumentors += [BotocoreInstrumentor(), AiobotocoreInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(**providers)
    try:
        traced = run()
    finally:
        for instrumentor in reversed(instrumentors):
            instrumentor.uninstrument()
    assert traced == bare
    assert exporter.get_finished_spans()
    tracer_provider.shutdown()
    meter_provider.shutdown()


def test_the_exception_object_is_botocores_own(otel: Otel, server: ScriptedServer, sleeps: list[float]) -> None:
    """The exception the caller receives is the one botocore's last attempt raised, not a copy of ours."""
    from botocore import endpoint

    seen: list[BaseException] = []
    original = endpoint.Endpoint._get_response

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        value = original(self, *args, **kwargs)
        if value[1] is not None:
            seen.append(value[1])
        return value

    endpoint.Endpoint._get_response = spy  # type: ignore[method-assign]
    BotocoreRetryInstrumentor().instrument(**otel.kwargs())
    try:
        error = call("dynamodb", f"http://127.0.0.1:{closed_port()}", config(attempts=2))
    finally:
        BotocoreRetryInstrumentor().uninstrument()
        endpoint.Endpoint._get_response = original  # type: ignore[method-assign]
    assert error is seen[-1]


def test_uninstrument_restores_originals(otel: Otel) -> None:
    from aiobotocore import endpoint as aio_endpoint
    from botocore import endpoint
    from botocore.retries.standard import RetryContext

    owners = [
        (endpoint.Endpoint, "_send_request"),
        (endpoint.Endpoint, "_get_response"),
        (endpoint.Endpoint, "_needs_retry"),
        (endpoint, "first_non_none_response"),
        (aio_endpoint.AioEndpoint, "_send_request"),
        (aio_endpoint.AioEndpoint, "_get_response"),
        (aio_endpoint.AioEndpoint, "_needs_retry"),
        (aio_endpoint, "first_non_none_response"),
        (RetryContext, "add_retry_metadata"),
    ]
    before = [vars(owner)[name] for owner, name in owners]
    BotocoreRetryInstrumentor().instrument(**otel.kwargs())
    AiobotocoreRetryInstrumentor().instrument(**otel.kwargs())
    assert [vars(owner)[name] for owner, name in owners] != before
    AiobotocoreRetryInstrumentor().uninstrument()
    BotocoreRetryInstrumentor().uninstrument()
    assert [vars(owner)[name] for owner, name in owners] == before


# --- our own failures, nesting, no SDK -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (LoopCall, "attempt_started"),
        (LoopCall, "attempt_ended"),
        (LoopCall, "retrying"),
        (LoopCall, "ended"),
        (LoopCall, "start"),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
def test_an_error_of_ours_never_reaches_the_app(
    otel: Otel,
    server: ScriptedServer,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
) -> None:
    def run() -> tuple[Any, int, int]:
        server.received.clear()
        sleeps.clear()
        server.script[:] = [s3_reply(503), s3_reply(200)]
        value = call("s3", server.url())
        return value["ResponseMetadata"]["RetryAttempts"], len(server.received), len(sleeps)

    bare = run()
    traced = runs_with_injected_failure(otel, monkeypatch, caplog, (owner, name), [BotocoreRetryInstrumentor], run)
    assert traced == [bare, bare]


def test_inside_a_tenacity_attempt_the_call_is_one_level_deeper(otel: Otel, server: ScriptedServer, sleeps: list[float]) -> None:
    server.reply(s3_reply(503), s3_reply(200))
    TenacityInstrumentor().instrument(**otel.kwargs())
    BotocoreRetryInstrumentor().instrument(**otel.kwargs())
    try:

        @tenacity.retry(stop=tenacity.stop_after_attempt(2))
        def list_buckets() -> Any:
            return call("s3", server.url())

        assert not isinstance(list_buckets(), Exception)
    finally:
        BotocoreRetryInstrumentor().uninstrument()
        TenacityInstrumentor().uninstrument()
    first, second = client_spans(otel)
    (attempt,) = [s for s in otel.spans() if s.kind is SpanKind.INTERNAL and not s.name.startswith("retry ")]
    assert first.parent.span_id == second.parent.span_id == attempt.get_span_context().span_id  # type: ignore[union-attr]
    depths = {dict(p.attributes)[semconv.RETRY_NAME]: dict(p.attributes)[semconv.RETRY_DEPTH] for p in otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS)}
    assert depths["S3.ListBuckets"] == 2


def test_no_sdk_records_and_injects_nothing(server: ScriptedServer, sleeps: list[float]) -> None:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    server.reply(s3_reply(503), s3_reply(200))
    BotocoreRetryInstrumentor().instrument(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
    try:
        value = call("s3", server.url())
    finally:
        BotocoreRetryInstrumentor().uninstrument()
    assert value["ResponseMetadata"]["RetryAttempts"] == 1
    assert all("traceparent" not in r.headers for r in server.received)
