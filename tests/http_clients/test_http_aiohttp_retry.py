"""aiohttp-retry: one CLIENT span per attempt alone, with the status and the wait aiohttp-retry chose; contrib's
aiohttp-client spans (one per attempt) enriched beside it. Real loopback servers; aiohttp-retry's waits are recorded
and not waited (``asyncio.sleep`` records the delay, then yields once)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp_retry import ExponentialRetry, FibonacciRetry, JitterRetry, ListRetry, RandomRetry, RetryClient
from aiohttp_retry.client import _RequestContext
from aiohttp_retry.retry_options import RetryOptionsBase
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.trace import StatusCode

from otel_resilience import semconv
from otel_resilience.instrumentation.aiohttp_retry import AiohttpRetryInstrumentor
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

SCOPE = "otel_resilience.aiohttp_retry"
instrumented = instrumented_fixture(AiohttpRetryInstrumentor)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """aiohttp-retry waits with ``asyncio.sleep``: recorded, then a bare yield to the loop."""
    calls: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded(delay: float, result: Any = None) -> Any:
        calls.append(delay)
        return await real_sleep(0, result)

    monkeypatch.setattr(asyncio, "sleep", recorded)
    return calls


async def get(url: Any, options: RetryOptionsBase, **kwargs: Any) -> Any:
    """GET through a RetryClient: the status of the response it returns, or the type of what it raises."""
    async with RetryClient(retry_options=options, raise_for_status=kwargs.pop("raise_for_status", False)) as client:
        try:
            async with client.get(url, **kwargs) as response:
                return response.status
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test compares
            return type(exc)


def expected(server: ScriptedServer, number: int, path: str = "/", **extra: Any) -> dict[str, Any]:
    return loopback_attempt(server.port, number, path, **extra)


async def test_503_503_200(instrumented: Otel, server: ScriptedServer, sleeps: list[float]) -> None:
    server.reply(Reply(503), Reply(503))
    options = ExponentialRetry(attempts=3, statuses={503}, start_timeout=0.1)
    with instrumented.tracer_provider.get_tracer("test").start_as_current_span("caller") as caller:
        assert await get(server.url(), options) == 200
    spans = client_spans(instrumented.spans())
    assert sleeps == [0.2, 0.4]  # ExponentialRetry: start_timeout * 2 ** attempt
    failed = {semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503"}
    assert_attributes(spans[0], expected(server, 1, **failed, **{semconv.RETRY_DELAY: 0.2}))
    assert_attributes(spans[1], expected(server, 2, **failed, **{semconv.RETRY_DELAY: 0.4}))
    assert_attributes(
        spans[2],
        expected(server, 3, **{semconv.HTTP_RESPONSE_STATUS_CODE: 200, semconv.RETRY_ATTEMPTS: 3, semconv.RETRY_RESULT: "success"}),
    )
    for span in spans:
        assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
        assert span.instrumentation_scope.name == SCOPE
    assert [s.status.status_code for s in spans] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert server.traceparents() == [traceparent_of(s) for s in spans]


OPTIONS: dict[str, Callable[[], RetryOptionsBase]] = {
    "exponential": lambda: ExponentialRetry(attempts=4, statuses={503}, start_timeout=0.05),
    "random": lambda: RandomRetry(attempts=4, statuses={503}, min_timeout=0.01, max_timeout=0.9),
    "list": lambda: ListRetry(timeouts=[0.3, 0.1, 0.2, 0.4], statuses={503}),
    "fibonacci": lambda: FibonacciRetry(attempts=4, statuses={503}, multiplier=0.1, max_timeout=5),
    "jitter": lambda: JitterRetry(attempts=4, statuses={503}, start_timeout=0.05, random_interval_size=0.5),
}


@pytest.mark.parametrize("kind", OPTIONS)
async def test_every_retry_class_reports_the_wait_it_chose(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float], kind: str
) -> None:
    server.reply(Reply(503), Reply(503), Reply(503))
    assert await get(server.url(), OPTIONS[kind]()) == 200
    spans = client_spans(instrumented.spans())
    assert len(spans) == 4 and len(sleeps) == 3
    assert [s.attributes[semconv.RETRY_DELAY] for s in spans[:3]] == [float(d) for d in sleeps]
    assert all(type(s.attributes[semconv.RETRY_DELAY]) is float for s in spans[:3])
    assert semconv.RETRY_DELAY not in spans[3].attributes
    assert spans[3].attributes[semconv.RETRY_RESULT] == "success"


async def test_exhaustion_returning_the_last_response_is_exhausted(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float]
) -> None:
    server.default = Reply(503)
    assert await get(server.url(), ExponentialRetry(attempts=2, statuses={503}, start_timeout=0.1)) == 503
    spans = client_spans(instrumented.spans())
    assert_attributes(
        spans[1],
        expected(
            server,
            2,
            **{semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503", semconv.RETRY_ATTEMPTS: 2, semconv.RETRY_RESULT: "exhausted"},
        ),
    )


async def test_exhaustion_with_raise_for_status(instrumented: Otel, server: ScriptedServer, sleeps: list[float]) -> None:
    server.default = Reply(500)
    options = ExponentialRetry(attempts=2, start_timeout=0.1)  # every 5xx is retried by default
    assert await get(server.url(), options, raise_for_status=True) is aiohttp.ClientResponseError
    spans = client_spans(instrumented.spans())
    assert spans[1].attributes[semconv.RETRY_RESULT] == "exhausted"
    assert spans[1].attributes[semconv.ERROR_TYPE] == "500"


async def test_status_the_policy_does_not_retry(instrumented: Otel, server: ScriptedServer, sleeps: list[float]) -> None:
    server.reply(Reply(404))
    assert await get(server.url(), ExponentialRetry(attempts=3, statuses={503})) == 404
    (span,) = client_spans(instrumented.spans())
    assert span.attributes[semconv.RETRY_RESULT] == "not_retried"
    assert span.attributes[semconv.RETRY_ATTEMPTS] == 1
    assert sleeps == []


@pytest.mark.parametrize("retried", [True, False])
async def test_refused_connections(instrumented: Otel, sleeps: list[float], retried: bool) -> None:
    port = closed_port()
    exceptions = {aiohttp.ClientConnectionError} if retried else None
    options = ExponentialRetry(attempts=3, start_timeout=0.1, exceptions=exceptions)
    assert await get(f"http://127.0.0.1:{port}/down", options) is aiohttp.ClientConnectorError
    spans = client_spans(instrumented.spans())
    error = "aiohttp.client_exceptions.ClientConnectorError"
    assert [s.attributes[semconv.ERROR_TYPE] for s in spans] == [error] * (3 if retried else 1)
    assert spans[-1].attributes[semconv.RETRY_RESULT] == ("exhausted" if retried else "not_retried")
    assert [s.attributes.get(semconv.RETRY_DELAY) for s in spans] == ([0.2, 0.4, None] if retried else [None])
    for span in spans:
        (event,) = events_named(span, semconv.EXCEPTION_EVENT)
        assert event[semconv.EXCEPTION_TYPE] == error


async def test_a_url_per_attempt(instrumented: Otel, server: ScriptedServer, sleeps: list[float]) -> None:
    server.reply(Reply(503))
    async with RetryClient(retry_options=ExponentialRetry(attempts=2, statuses={503})) as client:
        async with client.get([server.url("/first"), server.url("/second")]) as response:
            assert response.status == 200
    spans = client_spans(instrumented.spans())
    assert [s.attributes[semconv.URL_FULL] for s in spans] == [server.url("/first"), server.url("/second")]
    assert server.traceparents() == [traceparent_of(s) for s in spans]


async def test_the_apps_headers_are_sent_and_left_untouched(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float]
) -> None:
    server.reply(Reply(503))
    headers = {"x-app": "1"}
    assert await get(server.url(), ExponentialRetry(attempts=2, statuses={503}), headers=headers) == 200
    assert headers == {"x-app": "1"}
    assert [r.headers["x-app"] for r in server.received] == ["1", "1"]
    assert server.traceparents() == [traceparent_of(s) for s in client_spans(instrumented.spans())]


async def test_the_apps_response_callback_decides_and_is_called_as_without_us(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float]
) -> None:
    seen: list[int] = []

    async def retry_first(response: aiohttp.ClientResponse) -> bool:
        seen.append(response.status)
        return len(seen) > 1  # True: accept the response

    options = ExponentialRetry(attempts=3, evaluate_response_callback=retry_first)
    assert await get(server.url(), options) == 200
    assert seen == [200, 200]
    spans = client_spans(instrumented.spans())
    assert [s.attributes.get(semconv.RETRY_RESULT) for s in spans] == [None, "success"]
    assert spans[0].attributes[semconv.RETRY_DELAY] == sleeps[0]


# --- beside contrib's aiohttp-client instrumentation ------------------------------------------------------------------


@pytest.fixture(params=["ours alone", "aiohttp-client contrib"])
def combination(request: pytest.FixtureRequest, instrumented: Otel) -> Iterator[str]:
    if request.param != "ours alone":
        AioHttpClientInstrumentor().instrument(**instrumented.kwargs())
    yield request.param
    if request.param != "ours alone":
        AioHttpClientInstrumentor().uninstrument()


async def test_combinations_503_503_200(
    combination: str, instrumented: Otel, server: ScriptedServer, sleeps: list[float]
) -> None:
    server.reply(Reply(503), Reply(503))
    assert await get(server.url(), ExponentialRetry(attempts=3, statuses={503}, start_timeout=0.1)) == 200
    all_spans = instrumented.spans()
    assert_no_client_in_client(all_spans)
    spans = client_spans(all_spans)
    assert len(spans) == 3 == len(server.received)
    assert server.traceparents() == [traceparent_of(s) for s in spans]
    if combination == "ours alone":
        assert {s.instrumentation_scope.name for s in spans} == {SCOPE}
        return
    assert {s.instrumentation_scope.name for s in spans} == {"opentelemetry.instrumentation.aiohttp_client"}
    first, second, third = spans
    assert semconv.HTTP_REQUEST_RESEND_COUNT not in first.attributes and not first.events
    assert second.attributes[semconv.HTTP_REQUEST_RESEND_COUNT] == 1
    assert third.attributes[semconv.HTTP_REQUEST_RESEND_COUNT] == 2
    # Contrib ended attempt k's span before aiohttp-retry chose its wait: attempt k+1's span tells of it.
    assert events_named(second, semconv.HTTP_RESEND_EVENT) == [
        {semconv.RETRY_ATTEMPT: 1, semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503", semconv.RETRY_DELAY: 0.2}
    ]
    assert events_named(third, semconv.HTTP_RESEND_EVENT) == [
        {semconv.RETRY_ATTEMPT: 2, semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503", semconv.RETRY_DELAY: 0.4}
    ]
    assert semconv.RETRY_RESULT not in first.attributes and semconv.RETRY_RESULT not in second.attributes
    assert third.attributes[semconv.RETRY_ATTEMPTS] == 3 and third.attributes[semconv.RETRY_RESULT] == "success"


async def test_combinations_exhausted(
    combination: str, instrumented: Otel, server: ScriptedServer, sleeps: list[float]
) -> None:
    server.default = Reply(503)
    assert await get(server.url(), ExponentialRetry(attempts=2, statuses={503})) == 503
    all_spans = instrumented.spans()
    assert_no_client_in_client(all_spans)
    last = client_spans(all_spans)[-1]
    assert last.attributes[semconv.RETRY_ATTEMPTS] == 2 and last.attributes[semconv.RETRY_RESULT] == "exhausted"


# --- behaviour, security, uninstrument --------------------------------------------------------------------------------


SCENARIOS: dict[str, tuple[list[Reply], Callable[[], RetryOptionsBase], bool]] = {
    "503,503,200": ([Reply(503), Reply(503)], lambda: ExponentialRetry(attempts=3, statuses={503}), False),
    "exhausted": ([Reply(503)] * 2, lambda: ListRetry(timeouts=[0.1, 0.2], statuses={503}), False),
    "raise_for_status": ([Reply(500)] * 2, lambda: FibonacciRetry(attempts=2, multiplier=0.1, max_timeout=1), True),
    "refused": ([], lambda: ExponentialRetry(attempts=2, exceptions={aiohttp.ClientConnectionError}), False),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_behaviour_is_identical_with_and_without_instrumentation(
    otel: Otel, server: ScriptedServer, sleeps: list[float], scenario: str
) -> None:
    replies, options, raise_for_status = SCENARIOS[scenario]
    url = f"http://127.0.0.1:{closed_port()}/x" if scenario == "refused" else server.url("/x")

    async def run() -> tuple[Any, ...]:
        server.received.clear()
        sleeps.clear()
        server.script[:] = list(replies)
        return await get(url, options(), raise_for_status=raise_for_status), len(server.received), list(sleeps)

    bare = await run()
    AiohttpRetryInstrumentor().instrument(**otel.kwargs())
    try:
        traced = await run()
    finally:
        AiohttpRetryInstrumentor().uninstrument()
    assert traced == bare
    assert otel.spans()


async def test_url_full_never_carries_credentials_or_signatures(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float]
) -> None:
    query = "?X-Goog-Signature=g&AWSAccessKeyId=a&Signature=s&sig=z&keep=1"
    assert await get(f"http://user:secret@127.0.0.1:{server.port}/c{query}", ExponentialRetry()) == 200
    (span,) = client_spans(instrumented.spans())
    assert span.attributes[semconv.URL_FULL] == (
        f"http://REDACTED:REDACTED@127.0.0.1:{server.port}/c"
        "?X-Goog-Signature=REDACTED&AWSAccessKeyId=REDACTED&Signature=REDACTED&sig=REDACTED&keep=1"
    )


async def test_uninstrument_restores_originals(otel: Otel, server: ScriptedServer) -> None:
    from aiohttp.tracing import Trace

    owners = [(_RequestContext, "_do_request"), *((Trace, n) for n in ("send_request_start", "send_request_end", "send_request_exception"))]
    originals = {(owner, name): vars(owner)[name] for owner, name in owners}
    AiohttpRetryInstrumentor().instrument(**otel.kwargs())
    assert await get(server.url(), ExponentialRetry()) == 200
    assert all(vars(owner)[name] is not originals[(owner, name)] for owner, name in owners)
    AiohttpRetryInstrumentor().uninstrument()
    assert all(vars(owner)[name] is originals[(owner, name)] for owner, name in owners)
    assert await get(server.url(), ExponentialRetry()) == 200
    assert len(otel.spans()) == 1


async def test_the_context_is_left_as_it_was(instrumented: Otel, server: ScriptedServer) -> None:
    options = ExponentialRetry()
    async with RetryClient(retry_options=options) as client:
        context = client.get(server.url())
        request_func: Callable[..., Awaitable[Any]] = context._request_func
        async with context as response:
            assert response.status == 200
        assert context._request_func == request_func and context._retry_options is options


async def test_a_cancelled_loop_is_aborted(instrumented: Otel, server: ScriptedServer) -> None:
    server.reply(Reply(hang=True))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(get(server.url(), ExponentialRetry(attempts=3)), 0.05)
    (span,) = client_spans(instrumented.spans())
    assert span.attributes[semconv.RETRY_RESULT] == "aborted"
    assert span.attributes[semconv.ERROR_TYPE] == "asyncio.exceptions.CancelledError"
    assert span.status.status_code is StatusCode.ERROR


async def test_clients_made_before_instrumenting_are_traced_and_no_sdk_records_nothing(
    otel: Otel, server: ScriptedServer
) -> None:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    async with RetryClient(retry_options=ExponentialRetry()) as early:
        AiohttpRetryInstrumentor().instrument(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
        try:
            async with early.get(server.url()) as response:
                assert response.status == 200
            assert server.traceparents() == [None]
        finally:
            AiohttpRetryInstrumentor().uninstrument()
        AiohttpRetryInstrumentor().instrument(**otel.kwargs())
        try:
            async with early.get(server.url()) as response:
                assert response.status == 200
        finally:
            AiohttpRetryInstrumentor().uninstrument()
    (span,) = client_spans(otel.spans())
    assert server.traceparents()[1] == traceparent_of(span)
