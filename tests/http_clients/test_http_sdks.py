"""The OpenAI and Anthropic SDKs' own retry loop (the Stainless template): each try is an attempt of one operation.

openai over httpx2 (its default) and over httpx (``http_client=httpx.Client()``); anthropic over httpx2 (2.x refuses
httpx objects). Sync, async and streaming; alone, beside contrib's httpx/httpx2 instrumentation, beside contrib's
openai-v2 (a GenAI span per call) and under anthropic's own API-call span. The SDKs talk to scripted loopback servers
with dummy keys and minimal valid bodies; their waits are recorded, not waited (``time.sleep``, ``anyio.sleep``).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor, HTTPXClientInstrumentor
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from otel_resilience import semconv
from otel_resilience.core.http_loop import ClientLoop
from otel_resilience.instrumentation import _stainless as stainless
from otel_resilience.instrumentation.anthropic import AnthropicRetryInstrumentor
from otel_resilience.instrumentation.httpx import HttpxRetryInstrumentor
from otel_resilience.instrumentation.httpx2 import Httpx2RetryInstrumentor
from otel_resilience.instrumentation.openai import OpenAIRetryInstrumentor
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

CASES = [("openai", "httpx2"), ("openai", "httpx"), ("anthropic", "httpx2")]
CASE_IDS = ["openai-httpx2", "openai-httpx", "anthropic-httpx2"]
MODES = ["sync", "async", "stream", "astream"]
OURS = {"openai": OpenAIRetryInstrumentor, "anthropic": AnthropicRetryInstrumentor}
OUR_HTTP = {"httpx": HttpxRetryInstrumentor, "httpx2": Httpx2RetryInstrumentor}
CONTRIB_HTTP = {"httpx": HTTPXClientInstrumentor, "httpx2": HTTPX2ClientInstrumentor}
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}

_OPENAI_BODY = {
    "id": "c1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
}
_OPENAI_CHUNK = {
    "id": "c1",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
}
_ANTHROPIC_BODY = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "m",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 1, "output_tokens": 1},
}
_ANTHROPIC_EVENTS = [
    {"type": "message_start", "message": {**_ANTHROPIC_BODY, "content": [], "stop_reason": None}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "message_stop"},
]


def ok_reply(sdk: str, mode: str) -> Reply:
    """A minimal valid answer: a JSON body, or for streaming an event stream."""
    if mode not in ("stream", "astream"):
        body = _OPENAI_BODY if sdk == "openai" else _ANTHROPIC_BODY
        return Reply(200, {"content-type": "application/json"}, json.dumps(body).encode())
    if sdk == "openai":
        text = f"data: {json.dumps(_OPENAI_CHUNK)}\n\ndata: [DONE]\n\n"
    else:
        text = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in _ANTHROPIC_EVENTS)
    return Reply(200, {"content-type": "text/event-stream"}, text.encode())


def make_client(case: tuple[str, str], mode: str, base_url: str, max_retries: int, **options: Any) -> Any:
    sdk, transport = case
    is_async = mode in ("async", "astream")
    module = importlib.import_module(sdk)
    cls = getattr(module, ("Async" if is_async else "") + ("OpenAI" if sdk == "openai" else "Anthropic"))
    if transport == "httpx":
        options["http_client"] = httpx.AsyncClient() if is_async else httpx.Client()
    if sdk == "anthropic":
        options.setdefault("open_telemetry", False)  # its own span: a test of its own (below)
    return cls(api_key="test-key", base_url=base_url, max_retries=max_retries, **options)


def _create(sdk: str, client: Any, stream: bool) -> Any:
    messages = [{"role": "user", "content": "hi"}]
    if sdk == "openai":
        return client.chat.completions.create(model="m", messages=messages, stream=stream)
    return client.messages.create(model="m", max_tokens=8, messages=messages, stream=stream)


def _text(sdk: str, item: Any) -> str:
    if sdk == "openai":
        return item.choices[0].message.content if hasattr(item.choices[0], "message") else item.choices[0].delta.content or ""
    if getattr(item, "type", None) == "content_block_delta":
        return item.delta.text
    return "".join(block.text for block in getattr(item, "content", None) or [])


def call(case: tuple[str, str], mode: str, client: Any) -> str:
    """The SDK call: the text it returned (streams consumed), or it raises what the SDK raised."""
    sdk = case[0]
    if mode == "sync":
        return _text(sdk, _create(sdk, client, False))
    if mode == "stream":
        return "".join(_text(sdk, item) for item in _create(sdk, client, True))

    async def run() -> str:
        if mode == "async":
            return _text(sdk, await _create(sdk, client, False))
        return "".join([_text(sdk, item) async for item in await _create(sdk, client, True)])

    return asyncio.run(run())


def outcome(case: tuple[str, str], mode: str, client: Any) -> tuple[Any, ...]:
    """What the app saw: the text, or the exception's type, message, status and cause type."""
    try:
        return ("returned", call(case, mode, client))
    except Exception as exc:  # noqa: BLE001 - the outcome is what the test compares
        return ("raised", type(exc), str(exc), getattr(exc, "status_code", None), type(exc.__cause__))


@pytest.fixture(params=CASES, ids=CASE_IDS)
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param


@pytest.fixture
def instrumented(otel: Otel, case: tuple[str, str]) -> Iterator[Otel]:
    sdk, transport = case
    OURS[sdk]().instrument(**otel.kwargs())
    OUR_HTTP[transport]().instrument(**otel.kwargs())
    yield otel
    OUR_HTTP[transport]().uninstrument()
    OURS[sdk]().uninstrument()


def attempt(case: tuple[str, str], port: int, number: int, **extra: Any) -> dict[str, Any]:
    """Our CLIENT span's attributes for try `number` of the SDK's POST to the loopback server, plus `extra`."""
    return loopback_attempt(port, number, PATHS[case[0]], "POST", **extra)


def run_in_caller(otel: Otel, fn: Any) -> tuple[Any, ReadableSpan]:
    with otel.tracer_provider.get_tracer("test").start_as_current_span("caller") as caller:
        result = fn()
    return result, caller


def base(case: tuple[str, str], server_or_port: ScriptedServer | int) -> str:
    """The SDK's ``base_url`` on the loopback server: openai's includes ``/v1``, anthropic's paths start with it."""
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    return f"http://127.0.0.1:{port}" + ("/v1" if case[0] == "openai" else "")


# --- alone ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_503_503_200_is_one_operation_of_three_attempts(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float], case: tuple[str, str], mode: str
) -> None:
    sdk = case[0]
    server.reply(Reply(503), Reply(503), ok_reply(sdk, mode))
    client = make_client(case, mode, base(case, server), 2)
    text, caller = run_in_caller(instrumented, lambda: call(case, mode, client))
    assert text == "hi"
    spans = client_spans(instrumented.spans())
    assert len(sleeps) == 2 and len(server.received) == 3
    port = server.port
    assert dict(spans[0].attributes) == attempt(
        case, port, 1, **{semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503", semconv.RETRY_DELAY: sleeps[0]}
    )
    assert dict(spans[1].attributes) == attempt(
        case, port, 2, **{semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503", semconv.RETRY_DELAY: sleeps[1]}
    )
    assert dict(spans[2].attributes) == attempt(
        case,
        port,
        3,
        **{
            semconv.HTTP_RESPONSE_STATUS_CODE: 200,
            semconv.RETRY_ATTEMPTS: 3,
            semconv.RETRY_MAX_ATTEMPTS: 3,
            semconv.RETRY_RESULT: "success",
        },
    )
    for span in spans:
        assert span.kind is SpanKind.CLIENT and span.name == "POST"
        assert span.instrumentation_scope.name == f"otel_resilience.{sdk}"
        assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
    assert [s.status.status_code for s in spans] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert server.traceparents() == [traceparent_of(s) for s in spans]
    assert [r.headers["x-stainless-retry-count"] for r in server.received] == ["0", "1", "2"]
    assert retry_points(instrumented) == [("POST 127.0.0.1", "success", 1, 3)]


@pytest.mark.parametrize(
    ("header", "wait"), [({"Retry-After": "1"}, 1.0), ({"retry-after-ms": "250"}, 0.25)], ids=["Retry-After", "retry-after-ms"]
)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_429_waits_what_the_server_said(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float], case: tuple[str, str], mode: str,
    header: dict[str, str], wait: float,
) -> None:
    server.reply(Reply(429, header), ok_reply(case[0], mode))
    assert call(case, mode, make_client(case, mode, base(case, server), 2)) == "hi"
    first, second = client_spans(instrumented.spans())
    assert sleeps == [wait]
    assert first.attributes[semconv.RETRY_DELAY] == wait and first.attributes[semconv.ERROR_TYPE] == "429"
    assert second.attributes[semconv.RETRY_RESULT] == "success" and semconv.RETRY_DELAY not in second.attributes


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_connection_refused_every_try_is_exhausted(
    instrumented: Otel, sleeps: list[float], case: tuple[str, str], mode: str
) -> None:
    sdk, transport = case
    port = closed_port()
    module = importlib.import_module(sdk)
    with pytest.raises(module.APIConnectionError):
        call(case, mode, make_client(case, mode, base(case, port), 2))
    spans = client_spans(instrumented.spans())
    core = "httpcore" if transport == "httpx" else "httpcore2"
    assert [s.attributes[semconv.ERROR_TYPE] for s in spans] == [f"{core}.ConnectError"] * 3
    assert [s.attributes.get(semconv.RETRY_DELAY) for s in spans] == [*sleeps, None]
    assert spans[-1].attributes[semconv.RETRY_RESULT] == "exhausted"
    assert spans[-1].attributes[semconv.RETRY_ATTEMPTS] == 3
    assert retry_points(instrumented) == [("POST 127.0.0.1", "exhausted", 1, 3)]


def test_read_timeout_is_retried_then_exhausted(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float], case: tuple[str, str]
) -> None:
    server.default = Reply(hang=True)
    module = importlib.import_module(case[0])
    with pytest.raises(module.APITimeoutError):
        call(case, "sync", make_client(case, "sync", base(case, server), 1, timeout=0.2))
    spans = client_spans(instrumented.spans())
    core = "httpcore" if case[1] == "httpx" else "httpcore2"
    assert [s.attributes[semconv.ERROR_TYPE] for s in spans] == [f"{core}.ReadTimeout"] * 2
    assert spans[0].attributes[semconv.RETRY_DELAY] == sleeps[0]
    assert spans[1].attributes[semconv.RETRY_RESULT] == "exhausted"
    assert spans[1].attributes[semconv.RETRY_MAX_ATTEMPTS] == 2
    assert len(server.received) == 2


@pytest.mark.parametrize("mode", MODES)
def test_503_every_try_is_exhausted(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float], case: tuple[str, str], mode: str
) -> None:
    server.default = Reply(503)
    module = importlib.import_module(case[0])
    with pytest.raises(module.InternalServerError) as raised:
        call(case, mode, make_client(case, mode, base(case, server), 2))
    assert raised.value.status_code == 503
    spans = client_spans(instrumented.spans())
    assert len(spans) == 3 == len(server.received)
    last = spans[-1]
    assert last.attributes[semconv.RETRY_RESULT] == "exhausted" and last.attributes[semconv.RETRY_ATTEMPTS] == 3
    assert last.status.status_code is StatusCode.ERROR
    assert retry_points(instrumented) == [("POST 127.0.0.1", "exhausted", 1, 3)]


@pytest.mark.parametrize("mode", ["sync", "async", "stream"])
def test_a_status_the_sdk_does_not_retry(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float], case: tuple[str, str], mode: str
) -> None:
    server.reply(Reply(400, {"content-type": "application/json"}, b'{"error": {"message": "bad"}}'))
    module = importlib.import_module(case[0])
    with pytest.raises(module.BadRequestError):
        call(case, mode, make_client(case, mode, base(case, server), 2))
    (span,) = client_spans(instrumented.spans())
    assert dict(span.attributes) == attempt(
        case,
        server.port,
        1,
        **{
            semconv.HTTP_RESPONSE_STATUS_CODE: 400,
            semconv.ERROR_TYPE: "400",
            semconv.RETRY_ATTEMPTS: 1,
            semconv.RETRY_MAX_ATTEMPTS: 3,
            semconv.RETRY_RESULT: "not_retried",
        },
    )
    assert sleeps == [] and len(server.received) == 1
    assert retry_points(instrumented) == [("POST 127.0.0.1", "not_retried", 1, 1)]


def test_max_retries_zero_is_not_a_retry_loop(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float], case: tuple[str, str]
) -> None:
    """No retries: not a retried operation, and its one request (retries=0 transport) is a plain one: nothing of ours."""
    server.default = Reply(503)
    module = importlib.import_module(case[0])
    with pytest.raises(module.InternalServerError):
        call(case, "sync", make_client(case, "sync", base(case, server), 0))
    assert len(server.received) == 1
    assert instrumented.spans() == []
    assert retry_points(instrumented) == []


# --- beside contrib ---------------------------------------------------------------------------------------------------


def _contrib_spans(otel: Otel) -> list[ReadableSpan]:
    """Spans of contrib's instrumentations (openai-v2 makes its span through ``opentelemetry.util.genai``)."""
    return [s for s in otel.spans() if s.instrumentation_scope.name.startswith(("opentelemetry.instrumentation", "opentelemetry.util"))]


def _without_ours(attributes: Any) -> dict[str, Any]:
    ours = {semconv.HTTP_REQUEST_RESEND_COUNT, semconv.RETRY_ATTEMPTS, semconv.RETRY_RESULT, semconv.RETRY_MAX_ATTEMPTS}
    return {k: v for k, v in attributes.items() if k not in ours}


_VOLATILE = {"server.port", "url.full", "http.url", "net.peer.port"}


def _stable(attributes: Any) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if k not in _VOLATILE}


@pytest.mark.parametrize("mode", ["sync", "async", "stream"])
def test_beside_contrib_http_its_span_per_try_is_enriched(
    otel: Otel, server: ScriptedServer, sleeps: list[float], case: tuple[str, str], mode: str
) -> None:
    sdk, transport = case
    contrib = CONTRIB_HTTP[transport]

    def scenario() -> str:
        server.received.clear()
        sleeps.clear()
        server.script[:] = [Reply(503), Reply(503), ok_reply(sdk, mode)]
        return call(case, mode, make_client(case, mode, base(case, server), 2))

    contrib().instrument(**otel.kwargs())
    try:
        assert scenario() == "hi"
        contrib_alone = [dict(s.attributes) for s in _contrib_spans(otel)]
        otel.exporter.clear()
        OURS[sdk]().instrument(**otel.kwargs())
        OUR_HTTP[transport]().instrument(**otel.kwargs())
        try:
            assert scenario() == "hi"
        finally:
            OUR_HTTP[transport]().uninstrument()
            OURS[sdk]().uninstrument()
    finally:
        contrib().uninstrument()
    spans = client_spans(otel.spans())
    assert len(spans) == 3 == len(contrib_alone)
    assert all(s.instrumentation_scope.name == "opentelemetry.instrumentation.httpx" for s in spans)
    # Nothing contrib set has changed: the same keys with the same values (ports aside, the server is the same).
    assert [_stable(_without_ours(s.attributes)) for s in spans] == [_stable(a) for a in contrib_alone]
    assert [s.attributes.get(semconv.HTTP_REQUEST_RESEND_COUNT) for s in spans] == [None, 1, 2]
    assert events_named(spans[1], semconv.HTTP_RESEND_EVENT) == [
        {semconv.RETRY_ATTEMPT: 1, semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503", semconv.RETRY_DELAY: sleeps[0]}
    ]
    assert events_named(spans[2], semconv.HTTP_RESEND_EVENT) == [
        {semconv.RETRY_ATTEMPT: 2, semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503", semconv.RETRY_DELAY: sleeps[1]}
    ]
    assert all(semconv.RETRY_RESULT not in s.attributes for s in spans)  # contrib closed each before the SDK decided
    assert server.traceparents() == [traceparent_of(s) for s in spans]
    assert retry_points(otel) == [("POST 127.0.0.1", "success", 1, 3)]


@pytest.mark.parametrize("mode", ["sync", "async", "stream"])
def test_under_contrib_openai_v2_the_attempts_hang_under_its_span(
    otel: Otel, server: ScriptedServer, sleeps: list[float], mode: str
) -> None:
    case = ("openai", "httpx2")

    def scenario() -> str:
        server.received.clear()
        sleeps.clear()
        server.script[:] = [Reply(503), Reply(503), ok_reply("openai", mode)]
        return call(case, mode, make_client(case, mode, base(case, server), 2))

    OpenAIInstrumentor().instrument(**otel.kwargs())
    try:
        assert scenario() == "hi"
        (genai_alone,) = _contrib_spans(otel)
        otel.exporter.clear()
        OpenAIRetryInstrumentor().instrument(**otel.kwargs())
        Httpx2RetryInstrumentor().instrument(**otel.kwargs())
        try:
            assert scenario() == "hi"
        finally:
            Httpx2RetryInstrumentor().uninstrument()
            OpenAIRetryInstrumentor().uninstrument()
    finally:
        OpenAIInstrumentor().uninstrument()
    (genai,) = _contrib_spans(otel)
    attempts = [s for s in otel.spans() if s.instrumentation_scope.name == "otel_resilience.openai"]
    assert [s.attributes[semconv.RETRY_ATTEMPT] for s in attempts] == [1, 2, 3]
    assert all(s.parent is not None and s.parent.span_id == genai.get_span_context().span_id for s in attempts)
    assert attempts[-1].attributes[semconv.RETRY_RESULT] == "success"
    assert _stable(genai.attributes) == _stable(genai_alone.attributes)  # nothing of ours on the GenAI span
    assert genai.name == genai_alone.name
    assert server.traceparents() == [traceparent_of(s) for s in attempts]


def test_under_anthropics_own_span_the_attempts_are_its_children(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float]
) -> None:
    case = ("anthropic", "httpx2")
    if (OURS["anthropic"], OUR_HTTP["httpx2"]) != (AnthropicRetryInstrumentor, Httpx2RetryInstrumentor):
        pytest.fail("unexpected instrumentors")
    server.reply(Reply(503), Reply(503), ok_reply("anthropic", "sync"))
    AnthropicRetryInstrumentor().instrument(**instrumented.kwargs())  # idempotent: the fixture's case may differ
    Httpx2RetryInstrumentor().instrument(**instrumented.kwargs())
    try:
        client = make_client(case, "sync", base(case, server), 2, open_telemetry={"tracer_provider": instrumented.tracer_provider})
        assert call(case, "sync", client) == "hi"
    finally:
        Httpx2RetryInstrumentor().uninstrument()
        AnthropicRetryInstrumentor().uninstrument()
    (own,) = [s for s in instrumented.spans() if not s.instrumentation_scope.name.startswith("otel_resilience")]
    attempts = [s for s in instrumented.spans() if s.instrumentation_scope.name == "otel_resilience.anthropic"]
    assert [s.attributes[semconv.RETRY_ATTEMPT] for s in attempts] == [1, 2, 3]
    assert all(s.parent is not None and s.parent.span_id == own.get_span_context().span_id for s in attempts)
    assert own.attributes[semconv.HTTP_REQUEST_RESEND_COUNT] == 2  # its own, as it set it
    assert semconv.RETRY_RESULT not in own.attributes
    assert server.traceparents() == [traceparent_of(s) for s in attempts]


# --- behaviour ----------------------------------------------------------------------------------------------------


SCENARIOS = {
    "503, 503, 200": ([Reply(503), Reply(503)], 2),
    "503 until exhausted": ([Reply(503)] * 3, 2),
    "400": ([Reply(400, {"content-type": "application/json"}, b'{"error": {}}')], 2),
    "refused": ([], 2),
}


@pytest.mark.parametrize("mode", ["sync", "async", "stream"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_behaviour_is_identical_with_and_without_instrumentation(
    otel: Otel,
    server: ScriptedServer,
    sleeps: list[float],
    case: tuple[str, str],
    scenario: str,
    mode: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Same outcome, same requests, same waits. The SDK draws its jitter from the global ``random``, which the test
    SDK's span ids draw from too: the SDK gets a source of its own, seeded alike for both runs."""
    replies, max_retries = SCENARIOS[scenario]
    base_client = importlib.import_module(f"{case[0]}._base_client")
    url = base(case, closed_port()) if scenario == "refused" else base(case, server)

    def run() -> tuple[Any, ...]:
        server.received.clear()
        sleeps.clear()
        server.script[:] = [*replies, ok_reply(case[0], mode)]
        client = make_client(case, mode, url, max_retries)
        monkeypatch.setattr(base_client, "random", random.Random(1234).random)
        return outcome(case, mode, client), len(server.received), list(sleeps)

    bare = run()
    OURS[case[0]]().instrument(**otel.kwargs())
    OUR_HTTP[case[1]]().instrument(**otel.kwargs())
    try:
        traced = run()
    finally:
        OUR_HTTP[case[1]]().uninstrument()
        OURS[case[0]]().uninstrument()
    assert traced == bare
    assert client_spans(otel.spans())


def test_the_exception_is_the_sdks_own(instrumented: Otel, server: ScriptedServer, sleeps: list[float], case: tuple[str, str]) -> None:
    """The object the SDK raised reaches the caller: the one the SDK made from the last response."""
    server.default = Reply(503)
    module = importlib.import_module(case[0])
    made: list[BaseException] = []
    client = make_client(case, "sync", base(case, server), 1)
    original = client._make_status_error_from_response

    def record(response: Any) -> BaseException:
        made.append(original(response))
        return made[-1]

    client._make_status_error_from_response = record
    with pytest.raises(module.InternalServerError) as raised:
        call(case, "sync", client)
    assert made == [raised.value]


def test_uninstrument_restores_originals(otel: Otel, case: tuple[str, str]) -> None:
    base_client = importlib.import_module(f"{case[0]}._base_client")
    owners = [
        (base_client.SyncAPIClient, "_request" if "_request" in vars(base_client.SyncAPIClient) else "request"),
        (base_client.AsyncAPIClient, "_request" if "_request" in vars(base_client.AsyncAPIClient) else "request"),
        (base_client.BaseClient, "_calculate_retry_timeout"),
    ]
    originals = {owner_name: vars(owner_name[0])[owner_name[1]] for owner_name in owners}
    OURS[case[0]]().instrument(**otel.kwargs())
    assert all(vars(owner)[name] is not originals[(owner, name)] for owner, name in owners)
    OURS[case[0]]().uninstrument()
    assert all(vars(owner)[name] is originals[(owner, name)] for owner, name in owners)


FAULTS = [
    (scenario, owner, name)
    for scenario in ("503, 503, 200", "503 until exhausted")
    for owner, name in [
        (ClientLoop, "__init__"),
        (ClientLoop, "retrying"),
        (ClientLoop, "ended"),
        (ClientLoop, "start"),
        (stainless, "current_client_loop"),
        (stainless, "_result_of_raise"),
    ]
    if name != "_result_of_raise" or scenario != "503, 503, 200"  # asked only when the SDK raises
]


@pytest.mark.parametrize(
    ("scenario", "owner", "name"), FAULTS, ids=[f"{s}-{getattr(o, '__name__', o)}.{n}" for s, o, n in FAULTS]
)
def test_an_error_of_ours_never_reaches_the_app(
    otel: Otel,
    server: ScriptedServer,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    scenario: str,
) -> None:
    """An error injected into the loop's core or the SDK adapter: same outcome, requests and number of waits (the
    SDK's jitter makes the values differ), and the error logged once per place."""
    case = ("openai", "httpx2")
    replies, max_retries = SCENARIOS[scenario]

    def run() -> tuple[Any, ...]:
        server.received.clear()
        sleeps.clear()
        server.script[:] = [*replies, ok_reply("openai", "sync")]
        result = outcome(case, "sync", make_client(case, "sync", base(case, server), max_retries))
        return result, len(server.received), len(sleeps)

    bare = run()
    traced = runs_with_injected_failure(
        otel, monkeypatch, caplog, (owner, name), [OpenAIRetryInstrumentor, Httpx2RetryInstrumentor], run
    )
    assert traced == [bare, bare]


def test_inside_a_tenacity_attempt_the_call_is_one_level_deeper(
    otel: Otel, server: ScriptedServer, sleeps: list[float]
) -> None:
    import tenacity

    from otel_resilience.instrumentation.tenacity import TenacityInstrumentor

    case = ("openai", "httpx2")
    server.reply(Reply(503), ok_reply("openai", "sync"))
    client = make_client(case, "sync", base(case, server), 2)
    for instrumentor in (TenacityInstrumentor, OpenAIRetryInstrumentor, Httpx2RetryInstrumentor):
        instrumentor().instrument(**otel.kwargs())
    try:

        @tenacity.retry(stop=tenacity.stop_after_attempt(2))
        def chat() -> str:
            return call(case, "sync", client)

        assert chat() == "hi"
    finally:
        for instrumentor in (TenacityInstrumentor, OpenAIRetryInstrumentor, Httpx2RetryInstrumentor):
            instrumentor().uninstrument()
    first, second = client_spans(otel.spans())
    (attempt,) = [s for s in otel.spans() if s.kind is SpanKind.INTERNAL and not s.name.startswith("retry ")]
    assert first.parent.span_id == second.parent.span_id == attempt.get_span_context().span_id  # type: ignore[union-attr]
    depths = {
        p.attributes[semconv.RETRY_NAME]: p.attributes[semconv.RETRY_DEPTH]
        for p in otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS)
    }
    assert depths["POST 127.0.0.1"] == 2


def test_with_no_sdk_nothing_is_recorded_or_injected(
    server: ScriptedServer, sleeps: list[float], case: tuple[str, str]
) -> None:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    server.reply(Reply(503), Reply(503), ok_reply(case[0], "sync"))
    providers = {"tracer_provider": NoOpTracerProvider(), "meter_provider": NoOpMeterProvider()}
    OURS[case[0]]().instrument(**providers)
    OUR_HTTP[case[1]]().instrument(**providers)
    try:
        assert call(case, "sync", make_client(case, "sync", base(case, server), 2)) == "hi"
    finally:
        OUR_HTTP[case[1]]().uninstrument()
        OURS[case[0]]().uninstrument()
    assert server.traceparents() == [None, None, None] and len(sleeps) == 2
