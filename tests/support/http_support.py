"""Real loopback HTTP servers for the HTTP-client tests, scripted per test, and helpers to read HTTP attempt spans.

`ScriptedServer` answers the requests it receives with the replies of its script, in order (then with the default
reply), and records each request (method, path, headers), so a test can check what the server saw: how many attempts
reached it and which ``traceparent`` each carried. A reply can hold the answer back until the test ends (`hang`), for
read timeouts that cost the test only the client's short timeout.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from otel_resilience import semconv


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    hang: bool = False  # answer only when the test ends (the client's read timeout fires first)


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]


class ScriptedServer:
    def __init__(self, port: int = 0) -> None:
        self.script: list[Reply] = []
        self.default = Reply()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # one small write per header block and body: no delayed-ACK stalls

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                with server._lock:
                    server.received.append(
                        Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                    )
                    reply = server.script.pop(0) if server.script else server.default
                if reply.hang:
                    server._release.wait(10)
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value.replace("{base}", server.base))
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    def reply(self, *replies: Reply) -> ScriptedServer:
        self.script.extend(replies)
        return self

    def url(self, path: str = "/") -> str:
        return self.base + path

    def traceparents(self) -> list[str | None]:
        return [r.headers.get("traceparent") for r in self.received]

    def close(self) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Waits through ``time.sleep`` (sync) and ``anyio.sleep`` (async: httpcore's and the SDKs'): recorded, not
    waited. A test module that uses it imports it (and lists it in ``__all__``), as it does `server`."""
    calls: list[float] = []

    async def async_sleep(seconds: float) -> None:
        calls.append(seconds)

    monkeypatch.setattr(time, "sleep", calls.append)
    monkeypatch.setattr(anyio, "sleep", async_sleep)
    return calls


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


def closed_port() -> int:
    """A loopback port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client_spans(spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """The CLIENT spans, in the order they started."""
    return sorted((s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)


def traceparent_of(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def events_named(span: ReadableSpan, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


def assert_attributes(span: ReadableSpan, expected: dict[str, Any]) -> None:
    """The span has exactly these attributes, with these values and these types (``1 == 1.0`` would hide a type
    error)."""
    actual = dict(span.attributes or {})
    assert actual == expected, f"{span.name}: {actual} != {expected}"
    for key, value in expected.items():
        assert type(actual[key]) is type(value), f"{span.name}: {key} is {type(actual[key])}, expected {type(value)}"


def assert_no_client_in_client(spans: Sequence[ReadableSpan]) -> None:
    """Never a CLIENT span inside a CLIENT span (the parent may be any other span, or none)."""
    by_id = {s.get_span_context().span_id: s for s in spans}
    for span in spans:
        parent = by_id.get(span.parent.span_id) if span.parent is not None else None
        if span.kind is SpanKind.CLIENT and parent is not None:
            assert parent.kind is not SpanKind.CLIENT, f"CLIENT {span.name} inside CLIENT {parent.name}"


def loopback_attempt(port: int, number: int, path: str = "/", method: str = "GET", **extra: Any) -> dict[str, Any]:
    """The attributes of our CLIENT span for attempt `number` of a `method` request to ``127.0.0.1:{port}{path}``,
    plus `extra`."""
    attributes: dict[str, Any] = {
        semconv.RETRY_ATTEMPT: number,
        semconv.HTTP_REQUEST_METHOD: method,
        semconv.URL_FULL: f"http://127.0.0.1:{port}{path}",
        semconv.SERVER_ADDRESS: "127.0.0.1",
        semconv.SERVER_PORT: port,
    }
    if number > 1:
        attributes[semconv.HTTP_REQUEST_RESEND_COUNT] = number - 1
    return {**attributes, **extra}


def retry_points(otel: Any) -> list[tuple[str, str, int, int]]:
    """The ``retry.attempts`` points collected now (`otel` is the conftest's ``Otel``), as (``retry.name``,
    ``retry.result``, count, sum)."""
    return [
        (p.attributes[semconv.RETRY_NAME], p.attributes[semconv.RETRY_RESULT], p.count, p.sum)
        for p in otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS)
    ]
