"""httpx-retries' ``RetryTransport``: each try is an attempt of one operation, with the wait it slept and its own
verdict. Sync and async; alone and beside contrib's httpx instrumentation; real loopback servers, waits recorded."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import httpx_retries.retry
import pytest
from httpx_retries import Retry, RetryTransport
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.trace import StatusCode

from otel_resilience import semconv
from otel_resilience.core.http_loop import ClientLoop
from otel_resilience.instrumentation.httpx import HttpxRetryInstrumentor
from otel_resilience.instrumentation.httpx_retries import _adapter as httpx_retries_adapter
from otel_resilience.instrumentation.httpx_retries import HttpxRetriesInstrumentor
from tests.conftest import Otel
from tests.support.evidence import runs_with_injected_failure
from tests.support.http_support import (
    Reply,
    ScriptedServer,
    client_spans,
    closed_port,
    events_named,
    loopback_attempt,
    retry_points,
    server,
    sleeps,
    traceparent_of,
)

__all__ = ["server", "sleeps"]

SCOPE = "otel_resilience.httpx_retries"


@pytest.fixture(autouse=True)
def async_sleeps(monkeypatch: pytest.MonkeyPatch, sleeps: list[float]) -> None:
    """httpx-retries' async wait (``asyncio.sleep`` in its retry module) joins the recorded `sleeps`, not waited."""

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(httpx_retries.retry, "asyncio", SimpleNamespace(sleep=record))


@pytest.fixture
def instrumented(otel: Otel) -> Iterator[Otel]:
    HttpxRetriesInstrumentor().instrument(**otel.kwargs())
    HttpxRetryInstrumentor().instrument(**otel.kwargs())
    yield otel
    HttpxRetryInstrumentor().uninstrument()
    HttpxRetriesInstrumentor().uninstrument()


def fetch(kind: str, url: str, retry: Retry) -> Any:
    """GET `url` through a ``RetryTransport``: the status code, or the type of the exception raised."""
    try:
        if kind == "sync":
            with httpx.Client(transport=RetryTransport(retry=retry)) as client:
                return client.get(url).status_code

        async def run() -> int:
            async with httpx.AsyncClient(transport=RetryTransport(retry=retry)) as client:
                return (await client.get(url)).status_code

        return anyio.run(run)
    except Exception as exc:  # noqa: BLE001 - the outcome is what the test compares
        return type(exc)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_503_503_200_with_the_waits_it_slept(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float], kind: str
) -> None:
    server.reply(Reply(503), Reply(503))
    with instrumented.tracer_provider.get_tracer("test").start_as_current_span("caller") as caller:
        assert fetch(kind, server.url("/x"), Retry(total=3, backoff_factor=0.5)) == 200
    spans = client_spans(instrumented.spans())
    assert len(sleeps) == 2 and all(wait > 0 for wait in sleeps)
    assert dict(spans[0].attributes) == loopback_attempt(
        server.port, 1, "/x", **{semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503", semconv.RETRY_DELAY: sleeps[0]}
    )
    assert dict(spans[1].attributes) == loopback_attempt(
        server.port, 2, "/x", **{semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503", semconv.RETRY_DELAY: sleeps[1]}
    )
    assert dict(spans[2].attributes) == loopback_attempt(
        server.port,
        3,
        "/x",
        **{
            semconv.HTTP_RESPONSE_STATUS_CODE: 200,
            semconv.RETRY_ATTEMPTS: 3,
            semconv.RETRY_MAX_ATTEMPTS: 4,
            semconv.RETRY_RESULT: "success",
        },
    )
    assert all(s.instrumentation_scope.name == SCOPE for s in spans)
    assert all(s.parent is not None and s.parent.span_id == caller.get_span_context().span_id for s in spans)
    assert server.traceparents() == [traceparent_of(s) for s in spans]
    assert retry_points(instrumented) == [("GET 127.0.0.1", "success", 1, 3)]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_retry_after_is_the_wait(instrumented: Otel, server: ScriptedServer, sleeps: list[float], kind: str) -> None:
    server.reply(Reply(429, {"Retry-After": "2"}))
    assert fetch(kind, server.url("/x"), Retry(total=2)) == 200
    first, _second = client_spans(instrumented.spans())
    assert sleeps == [2.0] and first.attributes[semconv.RETRY_DELAY] == 2.0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_retries_spent_on_a_status_is_exhausted(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float], kind: str
) -> None:
    """httpx-retries returns the last 503 when its retries are spent: its verdict is exhausted, not the 503's."""
    server.default = Reply(503)
    assert fetch(kind, server.url("/x"), Retry(total=2)) == 503
    spans = client_spans(instrumented.spans())
    assert len(spans) == 3 == len(server.received)
    last = spans[-1]
    assert last.attributes[semconv.RETRY_RESULT] == "exhausted" and last.attributes[semconv.RETRY_MAX_ATTEMPTS] == 3
    assert last.status.status_code is StatusCode.ERROR
    assert [s.attributes.get(semconv.RETRY_DELAY) for s in spans] == [*sleeps, None]
    assert retry_points(instrumented) == [("GET 127.0.0.1", "exhausted", 1, 3)]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_refused_until_exhausted(instrumented: Otel, sleeps: list[float], kind: str) -> None:
    assert fetch(kind, f"http://127.0.0.1:{closed_port()}/x", Retry(total=2)) is httpx.ConnectError
    spans = client_spans(instrumented.spans())
    assert [s.attributes[semconv.ERROR_TYPE] for s in spans] == ["httpcore.ConnectError"] * 3
    assert spans[-1].attributes[semconv.RETRY_RESULT] == "exhausted"


def test_a_status_it_does_not_retry(instrumented: Otel, server: ScriptedServer, sleeps: list[float]) -> None:
    server.reply(Reply(404))
    assert fetch("sync", server.url("/x"), Retry(total=2)) == 404
    (span,) = client_spans(instrumented.spans())
    assert span.attributes[semconv.RETRY_RESULT] == "not_retried" and span.attributes[semconv.RETRY_ATTEMPTS] == 1
    assert retry_points(instrumented) == [("GET 127.0.0.1", "not_retried", 1, 1)]


def test_an_error_it_does_not_retry(instrumented: Otel, server: ScriptedServer, sleeps: list[float]) -> None:
    server.reply(Reply(hang=True))
    retry = Retry(total=2, retry_on_exceptions=[httpx.ConnectError])
    with httpx.Client(transport=RetryTransport(retry=retry), timeout=httpx.Timeout(1, read=0.05)) as client:
        with pytest.raises(httpx.ReadTimeout):
            client.get(server.url("/x"))
    (span,) = client_spans(instrumented.spans())
    assert span.attributes[semconv.RETRY_RESULT] == "not_retried"
    assert span.attributes[semconv.ERROR_TYPE] == "httpcore.ReadTimeout"


def test_a_method_it_does_not_retry_is_a_plain_request(instrumented: Otel, server: ScriptedServer) -> None:
    server.reply(Reply(503))
    with httpx.Client(transport=RetryTransport(retry=Retry(total=2))) as client:
        assert client.post(server.url("/x")).status_code == 503
    assert instrumented.spans() == [] and retry_points(instrumented) == []
    assert len(server.received) == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_beside_contrib_httpx_its_span_per_try_is_enriched(
    otel: Otel, server: ScriptedServer, sleeps: list[float], kind: str
) -> None:
    def scenario() -> Any:
        server.received.clear()
        sleeps.clear()
        server.script[:] = [Reply(503), Reply(503)]
        return fetch(kind, server.url("/x"), Retry(total=3, backoff_factor=0.5))

    HTTPXClientInstrumentor().instrument(**otel.kwargs())
    try:
        assert scenario() == 200
        alone = [dict(s.attributes) for s in otel.spans()]
        otel.exporter.clear()
        HttpxRetriesInstrumentor().instrument(**otel.kwargs())
        HttpxRetryInstrumentor().instrument(**otel.kwargs())
        try:
            assert scenario() == 200
        finally:
            HttpxRetryInstrumentor().uninstrument()
            HttpxRetriesInstrumentor().uninstrument()
    finally:
        HTTPXClientInstrumentor().uninstrument()
    spans = client_spans(otel.spans())
    assert len(spans) == 3 == len(alone)
    assert all(s.instrumentation_scope.name == "opentelemetry.instrumentation.httpx" for s in spans)
    volatile = {"server.port", "url.full", "http.url", "net.peer.port", semconv.HTTP_REQUEST_RESEND_COUNT}
    assert [{k: v for k, v in s.attributes.items() if k not in volatile} for s in spans] == [
        {k: v for k, v in a.items() if k not in volatile} for a in alone
    ]
    assert [s.attributes.get(semconv.HTTP_REQUEST_RESEND_COUNT) for s in spans] == [None, 1, 2]
    assert [e[semconv.RETRY_DELAY] for s in spans for e in events_named(s, semconv.HTTP_RESEND_EVENT)] == sleeps
    assert server.traceparents() == [traceparent_of(s) for s in spans]
    assert retry_points(otel) == [("GET 127.0.0.1", "success", 1, 3)]


SCENARIOS = {
    "503, 503, 200": [Reply(503), Reply(503)],
    "503 until exhausted": [Reply(503)] * 4,
    "404": [Reply(404)],
}


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("scenario", [*SCENARIOS, "refused"])
def test_behaviour_is_identical_with_and_without_instrumentation(
    otel: Otel, server: ScriptedServer, sleeps: list[float], scenario: str, kind: str
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/x" if scenario == "refused" else server.url("/x")

    def run() -> tuple[Any, ...]:
        server.received.clear()
        sleeps.clear()
        server.script[:] = list(SCENARIOS.get(scenario, []))
        return fetch(kind, url, Retry(total=3, backoff_factor=0.5, backoff_jitter=0)), len(server.received), list(sleeps)

    bare = run()
    HttpxRetriesInstrumentor().instrument(**otel.kwargs())
    HttpxRetryInstrumentor().instrument(**otel.kwargs())
    try:
        traced = run()
    finally:
        HttpxRetryInstrumentor().uninstrument()
        HttpxRetriesInstrumentor().uninstrument()
    assert traced == bare
    assert client_spans(otel.spans())


def test_uninstrument_restores_originals(otel: Otel) -> None:
    owners = [
        (RetryTransport, "handle_request"),
        (RetryTransport, "handle_async_request"),
        (Retry, "sleep"),
        (Retry, "asleep"),
        (Retry, "_calculate_sleep"),
    ]
    originals = {owner_name: vars(owner_name[0])[owner_name[1]] for owner_name in owners}
    HttpxRetriesInstrumentor().instrument(**otel.kwargs())
    assert all(vars(owner)[name] is not originals[(owner, name)] for owner, name in owners)
    HttpxRetriesInstrumentor().uninstrument()
    assert all(vars(owner)[name] is originals[(owner, name)] for owner, name in owners)


def test_inside_an_sdks_loop_it_joins_that_loop(otel: Otel, server: ScriptedServer, sleeps: list[float]) -> None:
    """openai over an httpx client whose transport is a RetryTransport: one loop (the SDK's), whose attempts are every
    request sent; RetryTransport's waits are waits within the SDK's try, and the SDK's own count decides its result."""
    import openai

    from otel_resilience.instrumentation.openai import OpenAIRetryInstrumentor
    from tests.http_clients.test_http_sdks import ok_reply

    server.reply(Reply(503), Reply(503), Reply(503), Reply(503))
    transport = RetryTransport(retry=Retry(total=1, allowed_methods=["POST"], backoff_factor=0.5))
    client = openai.OpenAI(
        api_key="test-key", base_url=server.url("/v1"), max_retries=2, http_client=httpx.Client(transport=transport)
    )
    server.script.append(ok_reply("openai", "sync"))
    for instrumentor in (OpenAIRetryInstrumentor, HttpxRetriesInstrumentor, HttpxRetryInstrumentor):
        instrumentor().instrument(**otel.kwargs())
    try:
        completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    finally:
        for instrumentor in (OpenAIRetryInstrumentor, HttpxRetriesInstrumentor, HttpxRetryInstrumentor):
            instrumentor().uninstrument()
    assert completion.choices[0].message.content == "hi"
    spans = client_spans(otel.spans())
    assert len(spans) == 5 == len(server.received)  # SDK tries 1 and 2 are two requests each, try 3 one
    assert {s.instrumentation_scope.name for s in spans} == {"otel_resilience.openai"}
    assert [s.attributes[semconv.RETRY_ATTEMPT] for s in spans] == [1, 2, 3, 4, 5]
    assert [s.attributes.get(semconv.RETRY_DELAY) for s in spans] == [*sleeps, None]
    assert len(sleeps) == 4  # RetryTransport's two, the SDK's two
    last = spans[-1].attributes
    assert (last[semconv.RETRY_ATTEMPTS], last[semconv.RETRY_MAX_ATTEMPTS], last[semconv.RETRY_RESULT]) == (5, 3, "success")
    assert retry_points(otel) == [("POST 127.0.0.1", "success", 1, 5)]


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (ClientLoop, "__init__"),
        (ClientLoop, "retrying"),
        (ClientLoop, "ended"),
        (ClientLoop, "start"),
        (httpx_retries_adapter, "current_client_loop"),
        (httpx_retries_adapter, "_verdict"),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_error_of_ours_never_reaches_the_app(
    otel: Otel,
    server: ScriptedServer,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    kind: str,
) -> None:
    def run() -> tuple[Any, ...]:
        server.received.clear()
        sleeps.clear()
        server.script[:] = [Reply(503), Reply(503)]
        return fetch(kind, server.url("/x"), Retry(total=3, backoff_factor=0.5, backoff_jitter=0)), len(server.received), list(sleeps)

    bare = run()
    traced = runs_with_injected_failure(
        otel, monkeypatch, caplog, (owner, name), [HttpxRetriesInstrumentor, HttpxRetryInstrumentor], run
    )
    assert traced == [bare, bare]
