"""httpx and httpx2 (its fork, with its own packages): the connection attempts ``HTTPTransport(retries=N)`` makes, and
redirects, sync and async; alone and beside contrib's httpx / httpx2 instrumentation. Every test runs with both
flavours, through the one adapter. Real loopback servers and refused connections on closed loopback ports; httpcore's
waits are recorded, not waited (``time.sleep`` for sync, ``anyio.sleep`` for async)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import anyio
import pytest
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor, HTTPXClientInstrumentor
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.trace import StatusCode

from otel_resilience import semconv
from otel_resilience.instrumentation.httpx import HttpxRetryInstrumentor
from otel_resilience.instrumentation.httpx2 import Httpx2RetryInstrumentor
from tests.conftest import Otel
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
    sleeps,
    traceparent_of,
)

__all__ = ["server", "sleeps"]


@dataclass(frozen=True)
class Flavour:
    """One httpx flavour: its modules, our instrumentor for it, and contrib's."""

    httpx: ModuleType
    httpcore: ModuleType
    instrumentor: type[BaseInstrumentor]
    contrib: type[BaseInstrumentor]

    @property
    def scope(self) -> str:
        return f"otel_resilience.{self.httpx.__name__}"

    @property
    def connect_error(self) -> str:
        return f"{self.httpcore.__name__}.ConnectError"


FLAVOURS = {
    "httpx": ("httpx", "httpcore", HttpxRetryInstrumentor, HTTPXClientInstrumentor),
    "httpx2": ("httpx2", "httpcore2", Httpx2RetryInstrumentor, HTTPX2ClientInstrumentor),
}


@pytest.fixture(params=list(FLAVOURS))
def fl(request: pytest.FixtureRequest) -> Flavour:
    httpx_name, httpcore_name, ours, contrib = FLAVOURS[request.param]
    return Flavour(importlib.import_module(httpx_name), importlib.import_module(httpcore_name), ours, contrib)


@pytest.fixture
def instrumented(otel: Otel, fl: Flavour) -> Iterator[Otel]:
    fl.instrumentor().instrument(**otel.kwargs())
    yield otel
    fl.instrumentor().uninstrument()


def fetch(fl: Flavour, kind: str, url: str, *, retries: int = 0, follow: bool = False, **request: Any) -> Any:
    """GET `url` with a sync or async client: the status code, or the type of the exception raised."""
    try:
        if kind == "sync":
            with fl.httpx.Client(transport=fl.httpx.HTTPTransport(retries=retries), follow_redirects=follow) as client:
                return client.get(url, **request).status_code
        return anyio.run(_async_fetch, fl, url, retries, follow, request)
    except Exception as exc:  # noqa: BLE001 - the outcome is what the test compares
        return type(exc)


async def _async_fetch(fl: Flavour, url: str, retries: int, follow: bool, request: dict[str, Any]) -> int:
    transport = fl.httpx.AsyncHTTPTransport(retries=retries)
    async with fl.httpx.AsyncClient(transport=transport, follow_redirects=follow) as client:
        return (await client.get(url, **request)).status_code


def connect_failure(fl: Flavour, port: int, number: int, **extra: Any) -> dict[str, Any]:
    return loopback_attempt(port, number, "/down", **{semconv.ERROR_TYPE: fl.connect_error, **extra})


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_refused_connection_attempts_and_their_waits(fl: Flavour, instrumented: Otel, sleeps: list[float], kind: str) -> None:
    port = closed_port()
    with instrumented.tracer_provider.get_tracer("test").start_as_current_span("caller") as caller:
        assert fetch(fl, kind, f"http://127.0.0.1:{port}/down", retries=2) is fl.httpx.ConnectError
    spans = client_spans(instrumented.spans())
    assert sleeps == [0, 0.5]  # httpcore's own waits, as it slept them
    assert_attributes(spans[0], connect_failure(fl, port, 1, **{semconv.RETRY_DELAY: 0.0}))
    assert_attributes(spans[1], connect_failure(fl, port, 2, **{semconv.RETRY_DELAY: 0.5}))
    assert_attributes(spans[2], connect_failure(fl, port, 3, **{semconv.RETRY_ATTEMPTS: 3, semconv.RETRY_RESULT: "exhausted"}))
    for span in spans:
        assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
        assert span.status.status_code is StatusCode.ERROR and span.instrumentation_scope.name == fl.scope
        (event,) = events_named(span, semconv.EXCEPTION_EVENT)
        assert event[semconv.EXCEPTION_TYPE] == fl.connect_error


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_connection_succeeding_on_retry_reaches_the_server_with_that_attempts_context(
    fl: Flavour, instrumented: Otel, sleeps: list[float], kind: str
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
        assert fetch(fl, kind, f"http://127.0.0.1:{port}/down", retries=1, extensions={"trace": extension}) == 200
        (late_server,) = started
    finally:
        for s in started:
            s.close()
    assert seen[:3] == ["connection.connect_tcp.started", "connection.connect_tcp.failed", "connection.retry.started"]
    first, second = client_spans(instrumented.spans())
    assert_attributes(first, connect_failure(fl, port, 1, **{semconv.RETRY_DELAY: 0.0}))
    expected = connect_failure(fl, port, 2, **{semconv.HTTP_RESPONSE_STATUS_CODE: 200})
    del expected[semconv.ERROR_TYPE]
    assert_attributes(second, {**expected, semconv.RETRY_ATTEMPTS: 2, semconv.RETRY_RESULT: "success"})
    assert late_server.traceparents() == [traceparent_of(second)]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_redirects_count_as_resends(fl: Flavour, instrumented: Otel, server: ScriptedServer, kind: str) -> None:
    server.reply(Reply(302, {"Location": "/b"}))
    assert fetch(fl, kind, server.url("/a"), retries=1, follow=True) == 200
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
def test_a_failing_status_is_one_attempt_not_retried(fl: Flavour, instrumented: Otel, server: ScriptedServer, kind: str) -> None:
    server.reply(Reply(503))
    assert fetch(fl, kind, server.url(), retries=3) == 503
    (span,) = client_spans(instrumented.spans())
    assert span.attributes[semconv.ERROR_TYPE] == "503"
    assert span.attributes[semconv.RETRY_RESULT] == "not_retried"
    assert span.status.status_code is StatusCode.ERROR
    assert len(server.received) == 1


def test_read_timeout_is_not_retried(fl: Flavour, instrumented: Otel, server: ScriptedServer) -> None:
    server.reply(Reply(hang=True))
    assert fetch(fl, "sync", server.url(), retries=3, timeout=fl.httpx.Timeout(1, read=0.05)) is fl.httpx.ReadTimeout
    (span,) = client_spans(instrumented.spans())
    assert span.attributes[semconv.ERROR_TYPE] == f"{fl.httpcore.__name__}.ReadTimeout"
    assert span.attributes[semconv.RETRY_RESULT] == "not_retried"


def test_too_many_redirects_is_exhausted(fl: Flavour, instrumented: Otel, server: ScriptedServer) -> None:
    server.default = Reply(302, {"Location": "/loop"})
    transport = fl.httpx.HTTPTransport(retries=1)  # with httpx's default, retries=0, the request is a plain one
    with fl.httpx.Client(transport=transport, follow_redirects=True, max_redirects=2) as client, pytest.raises(
        fl.httpx.TooManyRedirects
    ):
        client.get(server.url("/loop"))
    spans = client_spans(instrumented.spans())
    assert len(spans) == 3 == len(server.received)
    assert spans[-1].attributes[semconv.RETRY_RESULT] == "exhausted"


def test_keep_alive_requests_are_separate(fl: Flavour, instrumented: Otel, server: ScriptedServer) -> None:
    with fl.httpx.Client(transport=fl.httpx.HTTPTransport(retries=1)) as client:
        client.get(server.url("/1"))
        client.get(server.url("/2"))
    spans = client_spans(instrumented.spans())
    assert [(s.attributes[semconv.RETRY_ATTEMPT], s.attributes[semconv.RETRY_ATTEMPTS]) for s in spans] == [(1, 1), (1, 1)]


def test_httpcore_pool_used_directly_leaves_the_request_as_it_was(fl: Flavour, instrumented: Otel, server: ScriptedServer) -> None:
    host = f"127.0.0.1:{server.port}".encode()
    request = fl.httpcore.Request("GET", server.url("/direct"), headers=[(b"host", host), (b"x-app", b"1")], extensions={"timeout": {}})
    headers, extensions = list(request.headers), dict(request.extensions)
    with fl.httpcore.ConnectionPool(retries=1) as pool:
        response = pool.handle_request(request)
        response.read()
    assert response.status == 200
    assert request.headers == headers and request.extensions == extensions
    (span,) = client_spans(instrumented.spans())
    assert server.received[0].headers["x-app"] == "1"
    assert server.traceparents() == [traceparent_of(span)]


@pytest.fixture(params=["ours alone", "httpx contrib"])
def combination(request: pytest.FixtureRequest, instrumented: Otel, fl: Flavour) -> Iterator[str]:
    if request.param == "httpx contrib":
        fl.contrib().instrument(**instrumented.kwargs())
    yield request.param
    if request.param == "httpx contrib":
        fl.contrib().uninstrument()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_combinations_connection_retries(fl: Flavour, combination: str, instrumented: Otel, sleeps: list[float], kind: str) -> None:
    port = closed_port()
    assert fetch(fl, kind, f"http://127.0.0.1:{port}/down", retries=2) is fl.httpx.ConnectError
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
        {semconv.RETRY_ATTEMPT: 1, semconv.ERROR_TYPE: fl.connect_error, semconv.RETRY_DELAY: 0.0},
        {semconv.RETRY_ATTEMPT: 2, semconv.ERROR_TYPE: fl.connect_error, semconv.RETRY_DELAY: 0.5},
    ]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_combinations_redirect(fl: Flavour, combination: str, instrumented: Otel, server: ScriptedServer, kind: str) -> None:
    server.reply(Reply(302, {"Location": "/b"}))
    assert fetch(fl, kind, server.url("/a"), retries=1, follow=True) == 200
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
    "redirect": ("server", 1, True, [Reply(302, {"Location": "/b"})]),
    "503": ("server", 3, False, [Reply(503)]),
}


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_behaviour_is_identical_with_and_without_instrumentation(
    fl: Flavour, otel: Otel, server: ScriptedServer, sleeps: list[float], scenario: str, kind: str
) -> None:
    target, retries, follow, replies = SCENARIOS[scenario]
    url = f"http://127.0.0.1:{closed_port()}/x" if target == "refused" else server.url("/x")

    def run() -> tuple[Any, ...]:
        server.received.clear()
        sleeps.clear()
        server.script[:] = list(replies)
        return fetch(fl, kind, url, retries=retries, follow=follow), len(server.received), list(sleeps)

    bare = run()
    fl.instrumentor().instrument(**otel.kwargs())
    try:
        traced = run()
    finally:
        fl.instrumentor().uninstrument()
    assert traced == bare
    assert otel.spans()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_url_full_never_carries_credentials_or_signatures(fl: Flavour, instrumented: Otel, server: ScriptedServer, kind: str) -> None:
    query = "?X-Goog-Signature=g&AWSAccessKeyId=a&Signature=s&sig=z&keep=1"
    assert fetch(fl, kind, f"http://user:secret@127.0.0.1:{server.port}/c{query}", retries=1) == 200
    (span,) = client_spans(instrumented.spans())
    assert span.attributes[semconv.URL_FULL] == (
        f"http://REDACTED:REDACTED@127.0.0.1:{server.port}/c"
        "?X-Goog-Signature=REDACTED&AWSAccessKeyId=REDACTED&Signature=REDACTED&sig=REDACTED&keep=1"
    )


def test_uninstrument_restores_originals(fl: Flavour, otel: Otel, server: ScriptedServer) -> None:
    async_connection = importlib.import_module(f"{fl.httpcore.__name__}._async.connection")
    sync_connection = importlib.import_module(f"{fl.httpcore.__name__}._sync.connection")

    owners = [
        (fl.httpcore.ConnectionPool, "handle_request"),
        (fl.httpcore.AsyncConnectionPool, "handle_async_request"),
        (fl.httpx.Client, "send"),
        (fl.httpx.AsyncClient, "send"),
        (sync_connection, "exponential_backoff"),
        (async_connection, "exponential_backoff"),
    ]
    originals = {owner_name: vars(owner_name[0])[owner_name[1]] for owner_name in owners}
    fl.instrumentor().instrument(**otel.kwargs())
    assert all(vars(owner)[name] is not originals[(owner, name)] for owner, name in owners)
    fl.instrumentor().uninstrument()
    assert all(vars(owner)[name] is originals[(owner, name)] for owner, name in owners)
    assert fetch(fl, "sync", server.url()) == 200
    assert otel.spans() == []


async def test_a_cancelled_request_is_aborted(fl: Flavour, instrumented: Otel, server: ScriptedServer) -> None:
    import asyncio

    server.reply(Reply(hang=True))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(_async_fetch(fl, server.url(), 1, False, {}), 0.05)
    (span,) = client_spans(instrumented.spans())
    assert span.attributes[semconv.RETRY_RESULT] == "aborted"
    assert span.attributes[semconv.ERROR_TYPE] == "asyncio.exceptions.CancelledError"


def test_clients_made_before_instrumenting_are_traced_and_no_sdk_records_nothing(fl: Flavour, otel: Otel, server: ScriptedServer) -> None:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    with fl.httpx.Client(transport=fl.httpx.HTTPTransport(retries=1)) as early:
        fl.instrumentor().instrument(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
        try:
            assert early.get(server.url()).status_code == 200
            assert server.traceparents() == [None]
        finally:
            fl.instrumentor().uninstrument()
        fl.instrumentor().instrument(**otel.kwargs())
        try:
            assert early.get(server.url()).status_code == 200
        finally:
            fl.instrumentor().uninstrument()
    (span,) = client_spans(otel.spans())
    assert server.traceparents()[1] == traceparent_of(span)

