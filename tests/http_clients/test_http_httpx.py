"""httpx: the connection attempts ``HTTPTransport(retries=N)`` makes, and redirects, sync and async; alone and beside
contrib's httpx instrumentation. Real loopback servers and refused connections on closed loopback ports; httpcore's
waits are recorded, not waited (``time.sleep`` for sync, ``anyio.sleep`` for async)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpcore
import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.trace import StatusCode

from otel_resilience import semconv
from otel_resilience.instrumentation.httpx import HttpxRetryInstrumentor
from tests.conftest import Otel, instrumented_fixture
from tests.support.http_support import (
    Reply,
    ScriptedServer,
    assert_attributes,
    assert_no_client_in_client,
    client_spans,
    closed_port,
    events_named,
    loopback_attempt,
    server,
    traceparent_of,
)

__all__ = ["server"]

SCOPE = "otel_resilience.httpx"
CONNECT_ERROR = "httpcore.ConnectError"


instrumented = instrumented_fixture(HttpxRetryInstrumentor)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """httpcore's waits, sync (``time.sleep``) and async (``anyio.sleep``): recorded, not waited."""
    calls: list[float] = []

    async def async_sleep(seconds: float) -> None:
        calls.append(seconds)

    monkeypatch.setattr(time, "sleep", calls.append)
    monkeypatch.setattr(anyio, "sleep", async_sleep)
    return calls


def fetch(kind: str, url: str, *, retries: int = 0, follow: bool = False, **request: Any) -> Any:
    """GET `url` with a sync or async client: the status code, or the type of the exception raised."""
    try:
        if kind == "sync":
            with httpx.Client(transport=httpx.HTTPTransport(retries=retries), follow_redirects=follow) as client:
                return client.get(url, **request).status_code
        return anyio.run(_async_fetch, url, retries, follow, request)
    except Exception as exc:  # noqa: BLE001 - the outcome is what the test compares
        return type(exc)


async def _async_fetch(url: str, retries: int, follow: bool, request: dict[str, Any]) -> int:
    transport = httpx.AsyncHTTPTransport(retries=retries)
    async with httpx.AsyncClient(transport=transport, follow_redirects=follow) as client:
        return (await client.get(url, **request)).status_code


def connect_failure(port: int, number: int, **extra: Any) -> dict[str, Any]:
    return loopback_attempt(port, number, "/down", **{semconv.ERROR_TYPE: CONNECT_ERROR, **extra})


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_refused_connection_attempts_and_their_waits(instrumented: Otel, sleeps: list[float], kind: str) -> None:
    port = closed_port()
    with instrumented.tracer_provider.get_tracer("test").start_as_current_span("caller") as caller:
        assert fetch(kind, f"http://127.0.0.1:{port}/down", retries=2) is httpx.ConnectError
    spans = client_spans(instrumented.spans())
    assert sleeps == [0, 0.5]  # httpcore's own waits, as it slept them
    assert_attributes(spans[0], connect_failure(port, 1, **{semconv.RETRY_DELAY: 0.0}))
    assert_attributes(spans[1], connect_failure(port, 2, **{semconv.RETRY_DELAY: 0.5}))
    assert_attributes(spans[2], connect_failure(port, 3, **{semconv.RETRY_ATTEMPTS: 3, semconv.RETRY_RESULT: "exhausted"}))
    for span in spans:
        assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
        assert span.status.status_code is StatusCode.ERROR and span.instrumentation_scope.name == SCOPE
        (event,) = events_named(span, semconv.EXCEPTION_EVENT)
        assert event[semconv.EXCEPTION_TYPE] == CONNECT_ERROR


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_connection_succeeding_on_retry_reaches_the_server_with_that_attempts_context(
    instrumented: Otel, sleeps: list[float], kind: str
) -> None:
    """The app's own ``trace`` extension (called after ours) opens the server once the first attempt has failed."""
    port = closed_port()
    started: list[ScriptedServer] = []
    seen: list[str] = []

    def open_server(name: str) -> None:
        seen.append(name)
        if name == "connection.retry.started":
            started.append(ScriptedServer(port))

    def trace(name: str, info: dict[str, Any]) -> None:
        open_server(name)

    async def async_trace(name: str, info: dict[str, Any]) -> None:
        open_server(name)

    extension = trace if kind == "sync" else async_trace
    try:
        assert fetch(kind, f"http://127.0.0.1:{port}/down", retries=1, extensions={"trace": extension}) == 200
        (late_server,) = started
    finally:
        for s in started:
            s.close()
    assert seen[:3] == ["connection.connect_tcp.started", "connection.connect_tcp.failed", "connection.retry.started"]
    first, second = client_spans(instrumented.spans())
    assert_attributes(first, connect_failure(port, 1, **{semconv.RETRY_DELAY: 0.0}))
    expected = connect_failure(port, 2, **{semconv.HTTP_RESPONSE_STATUS_CODE: 200})
    del expected[semconv.ERROR_TYPE]
    assert_attributes(second, {**expected, semconv.RETRY_ATTEMPTS: 2, semconv.RETRY_RESULT: "success"})
    assert late_server.traceparents() == [traceparent_of(second)]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_redirects_count_as_resends(instrumented: Otel, server: ScriptedServer, kind: str) -> None:
    server.reply(Reply(302, {"Location": "/b"}))
    assert fetch(kind, server.url("/a"), follow=True) == 200
    first, second = client_spans(instrumented.spans())
    assert_attributes(first, loopback_attempt(server.port, 1, "/a", **{semconv.HTTP_RESPONSE_STATUS_CODE: 302, semconv.RETRY_DELAY: 0.0}))
    assert_attributes(
        second,
        loopback_attempt(
            server.port,
            2,
            "/b",
            **{semconv.HTTP_RESPONSE_STATUS_CODE: 200, semconv.RETRY_ATTEMPTS: 2, semconv.RETRY_RESULT: "success"},
        ),
    )
    assert server.traceparents() == [traceparent_of(first), traceparent_of(second)]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_failing_status_is_one_attempt_not_retried(instrumented: Otel, server: ScriptedServer, kind: str) -> None:
    server.reply(Reply(503))
    assert fetch(kind, server.url(), retries=3) == 503
    (span,) = client_spans(instrumented.spans())
    assert span.attributes[semconv.ERROR_TYPE] == "503"
    assert span.attributes[semconv.RETRY_RESULT] == "not_retried"
    assert span.status.status_code is StatusCode.ERROR
    assert len(server.received) == 1


def test_read_timeout_is_not_retried(instrumented: Otel, server: ScriptedServer) -> None:
    server.reply(Reply(hang=True))
    assert fetch("sync", server.url(), retries=3, timeout=httpx.Timeout(1, read=0.05)) is httpx.ReadTimeout
    (span,) = client_spans(instrumented.spans())
    assert span.attributes[semconv.ERROR_TYPE] == "httpcore.ReadTimeout"
    assert span.attributes[semconv.RETRY_RESULT] == "not_retried"


def test_too_many_redirects_is_exhausted(instrumented: Otel, server: ScriptedServer) -> None:
    server.default = Reply(302, {"Location": "/loop"})
    with httpx.Client(follow_redirects=True, max_redirects=2) as client, pytest.raises(httpx.TooManyRedirects):
        client.get(server.url("/loop"))
    spans = client_spans(instrumented.spans())
    assert len(spans) == 3 == len(server.received)
    assert spans[-1].attributes[semconv.RETRY_RESULT] == "exhausted"


def test_keep_alive_requests_are_separate(instrumented: Otel, server: ScriptedServer) -> None:
    with httpx.Client() as client:
        client.get(server.url("/1"))
        client.get(server.url("/2"))
    spans = client_spans(instrumented.spans())
    assert [(s.attributes[semconv.RETRY_ATTEMPT], s.attributes[semconv.RETRY_ATTEMPTS]) for s in spans] == [(1, 1), (1, 1)]


def test_httpcore_pool_used_directly_leaves_the_request_as_it_was(instrumented: Otel, server: ScriptedServer) -> None:
    host = f"127.0.0.1:{server.port}".encode()
    request = httpcore.Request("GET", server.url("/direct"), headers=[(b"host", host), (b"x-app", b"1")], extensions={"timeout": {}})
    headers, extensions = list(request.headers), dict(request.extensions)
    with httpcore.ConnectionPool(retries=1) as pool:
        response = pool.handle_request(request)
        response.read()
    assert response.status == 200
    assert request.headers == headers and request.extensions == extensions
    (span,) = client_spans(instrumented.spans())
    assert server.received[0].headers["x-app"] == "1"
    assert server.traceparents() == [traceparent_of(span)]


@pytest.fixture(params=["ours alone", "httpx contrib"])
def combination(request: pytest.FixtureRequest, instrumented: Otel) -> Iterator[str]:
    if request.param == "httpx contrib":
        HTTPXClientInstrumentor().instrument(**instrumented.kwargs())
    yield request.param
    if request.param == "httpx contrib":
        HTTPXClientInstrumentor().uninstrument()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_combinations_connection_retries(combination: str, instrumented: Otel, sleeps: list[float], kind: str) -> None:
    port = closed_port()
    assert fetch(kind, f"http://127.0.0.1:{port}/down", retries=2) is httpx.ConnectError
    all_spans = instrumented.spans()
    assert_no_client_in_client(all_spans)
    spans = client_spans(all_spans)
    if combination == "ours alone":
        assert [s.attributes[semconv.RETRY_ATTEMPT] for s in spans] == [1, 2, 3]
        return
    (span,) = spans
    assert span.instrumentation_scope.name == "opentelemetry.instrumentation.httpx"
    assert span.attributes[semconv.HTTP_REQUEST_RESEND_COUNT] == 2
    assert span.attributes[semconv.RETRY_ATTEMPTS] == 3
    assert span.attributes[semconv.RETRY_RESULT] == "exhausted"
    assert events_named(span, semconv.HTTP_RESEND_EVENT) == [
        {semconv.RETRY_ATTEMPT: 1, semconv.ERROR_TYPE: CONNECT_ERROR, semconv.RETRY_DELAY: 0.0},
        {semconv.RETRY_ATTEMPT: 2, semconv.ERROR_TYPE: CONNECT_ERROR, semconv.RETRY_DELAY: 0.5},
    ]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_combinations_redirect(combination: str, instrumented: Otel, server: ScriptedServer, kind: str) -> None:
    server.reply(Reply(302, {"Location": "/b"}))
    assert fetch(kind, server.url("/a"), follow=True) == 200
    all_spans = instrumented.spans()
    assert_no_client_in_client(all_spans)
    first, second = client_spans(all_spans)
    assert server.traceparents() == [traceparent_of(first), traceparent_of(second)]
    if combination == "ours alone":
        assert second.attributes[semconv.HTTP_REQUEST_RESEND_COUNT] == 1
        return
    # contrib makes one span per hop: the first hop settled as a success; the second is the resend.
    assert first.attributes[semconv.RETRY_ATTEMPTS] == 1 and first.attributes[semconv.RETRY_RESULT] == "success"
    assert second.attributes[semconv.HTTP_REQUEST_RESEND_COUNT] == 1
    assert second.attributes[semconv.RETRY_ATTEMPTS] == 2 and second.attributes[semconv.RETRY_RESULT] == "success"
    assert events_named(second, semconv.HTTP_RESEND_EVENT) == [
        {semconv.RETRY_ATTEMPT: 1, semconv.HTTP_RESPONSE_STATUS_CODE: 302, semconv.RETRY_DELAY: 0.0}
    ]


SCENARIOS = {
    "refused, retries=2": ("refused", 2, False, []),
    "redirect": ("server", 0, True, [Reply(302, {"Location": "/b"})]),
    "503": ("server", 3, False, [Reply(503)]),
}


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_behaviour_is_identical_with_and_without_instrumentation(
    otel: Otel, server: ScriptedServer, sleeps: list[float], scenario: str, kind: str
) -> None:
    target, retries, follow, replies = SCENARIOS[scenario]
    url = f"http://127.0.0.1:{closed_port()}/x" if target == "refused" else server.url("/x")

    def run() -> tuple[Any, ...]:
        server.received.clear()
        sleeps.clear()
        server.script[:] = list(replies)
        return fetch(kind, url, retries=retries, follow=follow), len(server.received), list(sleeps)

    bare = run()
    HttpxRetryInstrumentor().instrument(**otel.kwargs())
    try:
        traced = run()
    finally:
        HttpxRetryInstrumentor().uninstrument()
    assert traced == bare
    assert otel.spans()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_url_full_never_carries_credentials_or_signatures(instrumented: Otel, server: ScriptedServer, kind: str) -> None:
    query = "?X-Goog-Signature=g&AWSAccessKeyId=a&Signature=s&sig=z&keep=1"
    assert fetch(kind, f"http://user:secret@127.0.0.1:{server.port}/c{query}") == 200
    (span,) = client_spans(instrumented.spans())
    assert span.attributes[semconv.URL_FULL] == (
        f"http://REDACTED:REDACTED@127.0.0.1:{server.port}/c"
        "?X-Goog-Signature=REDACTED&AWSAccessKeyId=REDACTED&Signature=REDACTED&sig=REDACTED&keep=1"
    )


def test_uninstrument_restores_originals(otel: Otel, server: ScriptedServer) -> None:
    from httpcore._async import connection as async_connection
    from httpcore._sync import connection as sync_connection

    owners = [
        (httpcore.ConnectionPool, "handle_request"),
        (httpcore.AsyncConnectionPool, "handle_async_request"),
        (httpx.Client, "send"),
        (httpx.AsyncClient, "send"),
        (sync_connection, "exponential_backoff"),
        (async_connection, "exponential_backoff"),
    ]
    originals = {owner_name: vars(owner_name[0])[owner_name[1]] for owner_name in owners}
    HttpxRetryInstrumentor().instrument(**otel.kwargs())
    assert all(vars(owner)[name] is not originals[(owner, name)] for owner, name in owners)
    HttpxRetryInstrumentor().uninstrument()
    assert all(vars(owner)[name] is originals[(owner, name)] for owner, name in owners)
    assert fetch("sync", server.url()) == 200
    assert otel.spans() == []


async def test_a_cancelled_request_is_aborted(instrumented: Otel, server: ScriptedServer) -> None:
    import asyncio

    server.reply(Reply(hang=True))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(_async_fetch(server.url(), 1, False, {}), 0.05)
    (span,) = client_spans(instrumented.spans())
    assert span.attributes[semconv.RETRY_RESULT] == "aborted"
    assert span.attributes[semconv.ERROR_TYPE] == "asyncio.exceptions.CancelledError"


def test_clients_made_before_instrumenting_are_traced_and_no_sdk_records_nothing(otel: Otel, server: ScriptedServer) -> None:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    with httpx.Client(transport=httpx.HTTPTransport(retries=1)) as early:
        HttpxRetryInstrumentor().instrument(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
        try:
            assert early.get(server.url()).status_code == 200
            assert server.traceparents() == [None]
        finally:
            HttpxRetryInstrumentor().uninstrument()
        HttpxRetryInstrumentor().instrument(**otel.kwargs())
        try:
            assert early.get(server.url()).status_code == 200
        finally:
            HttpxRetryInstrumentor().uninstrument()
    (span,) = client_spans(otel.spans())
    assert server.traceparents()[1] == traceparent_of(span)

