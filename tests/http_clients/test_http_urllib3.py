"""urllib3 and requests: one CLIENT span per attempt alone; contrib's span enriched beside requests' or urllib3's
contrib instrumentation (all four combinations). Real loopback servers, scripted per test; no real waits (urllib3's
``time.sleep`` is replaced by a recorder, so the waits urllib3 chose are known exactly)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import urllib3
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from opentelemetry.instrumentation.utils import suppress_http_instrumentation, suppress_instrumentation
from opentelemetry.trace import SpanKind, StatusCode
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from otel_resilience import semconv
from otel_resilience.core import Telemetry
from otel_resilience.core import http as http_core
from otel_resilience.instrumentation.urllib3 import Urllib3RetryInstrumentor
from otel_resilience.instrumentation.urllib3 import _adapter as adapter_module
from tests.conftest import Otel, instrumented_fixture
from tests.support.evidence import assert_injected_failure_reported
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

__all__ = ["server"]  # the fixture, imported so pytest finds it

SCOPE = "otel_resilience.urllib3"
RETRY_503 = {"total": 3, "status_forcelist": [503], "backoff_factor": 0}


instrumented = instrumented_fixture(Urllib3RetryInstrumentor)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """urllib3 sleeps through ``time.sleep``: recorded, not waited."""
    calls: list[float] = []
    monkeypatch.setattr(time, "sleep", calls.append)
    return calls


def session(**retry: Any) -> requests.Session:
    s = requests.Session()
    s.mount("http://", HTTPAdapter(max_retries=Retry(**retry)))
    return s


def attempt(server: ScriptedServer, number: int, path: str = "/", **extra: Any) -> dict[str, Any]:
    return loopback_attempt(server.port, number, path, **extra)


def failed(status: int, delay: float | None = 0.0) -> dict[str, Any]:
    out: dict[str, Any] = {semconv.HTTP_RESPONSE_STATUS_CODE: status, semconv.ERROR_TYPE: str(status)}
    if delay is not None:
        out[semconv.RETRY_DELAY] = delay
    return out


def last(attempts: int, result: str, **extra: Any) -> dict[str, Any]:
    return {semconv.RETRY_ATTEMPTS: attempts, semconv.RETRY_RESULT: result, **extra}


# --- alone ---------------------------------------------------------------------------------------------------------


def test_requests_503_503_200_one_client_span_per_attempt(instrumented: Otel, server: ScriptedServer) -> None:
    server.reply(Reply(503), Reply(503))
    with instrumented.tracer_provider.get_tracer("test").start_as_current_span("caller") as caller:
        response = session(**RETRY_503).get(server.url())
    assert response.status_code == 200
    spans = client_spans(instrumented.spans())
    assert [s.name for s in spans] == ["GET", "GET", "GET"]
    assert_attributes(spans[0], attempt(server, 1, **failed(503)))
    assert_attributes(spans[1], attempt(server, 2, **failed(503)))
    assert_attributes(spans[2], attempt(server, 3, **{semconv.HTTP_RESPONSE_STATUS_CODE: 200}, **last(3, "success")))
    for span in spans:  # siblings under the caller's span, no operation span
        assert span.parent is not None and span.parent.span_id == caller.get_span_context().span_id
        assert span.instrumentation_scope.name == SCOPE
    assert [s.status.status_code for s in spans] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert [s.name for s in instrumented.spans()] == ["GET", "GET", "GET", "caller"]
    # Each attempt carried its own trace context: the server's spans hang under the attempt that reached it.
    assert server.traceparents() == [traceparent_of(s) for s in spans]


def test_pool_manager_backoff_with_jitter_is_the_wait_urllib3_used(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float]
) -> None:
    server.reply(Reply(503), Reply(503), Reply(503))
    pool = urllib3.PoolManager(retries=Retry(total=3, status_forcelist=[503], backoff_factor=0.1, backoff_jitter=0.5))
    assert pool.request("GET", server.url("/j")).status == 200
    spans = client_spans(instrumented.spans())
    delays = [s.attributes[semconv.RETRY_DELAY] for s in spans[:-1]]
    # urllib3 waits 0 after the first failure (no sleep call), then backoff + random jitter: exactly what it slept.
    assert delays[0] == 0.0 and delays[1:] == sleeps and len(sleeps) == 2
    assert all(type(d) is float for d in delays)
    assert sleeps[0] != 0.2 and 0.2 <= sleeps[0] <= 0.7 and 0.4 <= sleeps[1] <= 0.9
    assert semconv.RETRY_DELAY not in spans[-1].attributes
    assert_attributes(spans[-1], attempt(server, 4, "/j", **{semconv.HTTP_RESPONSE_STATUS_CODE: 200}, **last(4, "success")))


def test_429_retry_after_is_the_delay(instrumented: Otel, server: ScriptedServer, sleeps: list[float]) -> None:
    server.reply(Reply(429, {"Retry-After": "1"}))
    pool = urllib3.PoolManager(retries=Retry(total=2, status_forcelist=[429], backoff_factor=5))
    assert pool.request("GET", server.url()).status == 200
    assert sleeps == [1]
    spans = client_spans(instrumented.spans())
    assert_attributes(spans[0], attempt(server, 1, **failed(429, 1.0)))
    assert_attributes(spans[1], attempt(server, 2, **{semconv.HTTP_RESPONSE_STATUS_CODE: 200}, **last(2, "success")))


def test_retry_subclass_computing_its_own_backoff_shows_the_wait_urllib3_slept(
    instrumented: Otel, server: ScriptedServer, sleeps: list[float]
) -> None:
    class FixedBackoff(Retry):
        def get_backoff_time(self) -> float:
            return 0.25

    server.reply(Reply(503))
    pool = urllib3.PoolManager(retries=FixedBackoff(total=2, status_forcelist=[503]))
    assert pool.request("GET", server.url()).status == 200
    assert sleeps == [0.25]
    assert client_spans(instrumented.spans())[0].attributes[semconv.RETRY_DELAY] == 0.25


def test_retry_subclass_waiting_its_own_way_has_its_wait_measured(instrumented: Otel, server: ScriptedServer) -> None:
    """A subclass whose ``sleep`` does not go through urllib3's ``time.sleep``: what we cannot read is measured."""
    waited = threading.Event()

    class OwnWait(Retry):
        def sleep(self, response: Any = None) -> None:
            waited.wait(0.05)  # never set: a 50 ms wait that urllib3's time.sleep never sees

    server.reply(Reply(503))
    pool = urllib3.PoolManager(retries=OwnWait(total=2, status_forcelist=[503]))
    assert pool.request("GET", server.url()).status == 200
    first, second = client_spans(instrumented.spans())
    assert 0.04 <= first.attributes[semconv.RETRY_DELAY] < 5.0
    assert semconv.RETRY_DELAY not in second.attributes


def test_time_in_urllib3s_retry_module_is_the_real_module_for_everything_else(instrumented: Otel, server: ScriptedServer) -> None:
    from urllib3.util import retry as retry_module

    session().get(server.url())  # goes live: the wait observer is in place
    assert retry_module.time is not time
    assert retry_module.time.time is time.time and retry_module.time.monotonic is time.monotonic
    parsed = Retry().parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT")  # urllib3 reads time.time() here
    assert parsed == 0


def test_connection_refused_exhausts(instrumented: Otel, sleeps: list[float]) -> None:
    port = closed_port()
    pool = urllib3.PoolManager(retries=Retry(total=2, backoff_factor=0))
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        pool.request("GET", f"http://127.0.0.1:{port}/down")
    spans = client_spans(instrumented.spans())
    assert len(spans) == 3
    error = "urllib3.exceptions.NewConnectionError"
    for number, span in enumerate(spans, start=1):
        outcome = {semconv.RETRY_DELAY: 0.0} if number < 3 else last(3, "exhausted")
        expected = loopback_attempt(port, number, "/down", **{semconv.ERROR_TYPE: error}, **outcome)
        assert_attributes(span, expected)
        assert span.status.status_code is StatusCode.ERROR
        (event,) = events_named(span, semconv.EXCEPTION_EVENT)
        assert event[semconv.EXCEPTION_TYPE] == error
        assert semconv.EXCEPTION_STACKTRACE not in event


def test_requests_connection_refused_is_connection_error(instrumented: Otel) -> None:
    with pytest.raises(requests.exceptions.ConnectionError):
        session(total=1, backoff_factor=0).get(f"http://127.0.0.1:{closed_port()}/")
    spans = client_spans(instrumented.spans())
    assert [s.attributes[semconv.RETRY_ATTEMPT] for s in spans] == [1, 2]
    assert spans[-1].attributes[semconv.RETRY_RESULT] == "exhausted"


def test_read_timeout_is_retried_then_exhausts(instrumented: Otel, server: ScriptedServer) -> None:
    server.reply(Reply(hang=True), Reply(hang=True))
    pool = urllib3.PoolManager(retries=Retry(total=1, read=1), timeout=urllib3.Timeout(connect=1, read=0.05))
    with pytest.raises(urllib3.exceptions.MaxRetryError) as raised:
        pool.request("GET", server.url("/slow"))
    assert isinstance(raised.value.reason, urllib3.exceptions.ReadTimeoutError)
    spans = client_spans(instrumented.spans())
    assert [s.attributes[semconv.ERROR_TYPE] for s in spans] == ["urllib3.exceptions.ReadTimeoutError"] * 2
    assert spans[0].attributes[semconv.RETRY_DELAY] == 0.0
    assert spans[1].attributes[semconv.RETRY_RESULT] == "exhausted"
    assert len(server.received) == 2


def test_post_read_error_is_not_retried(instrumented: Otel, server: ScriptedServer) -> None:
    """urllib3 does not retry a read error on POST (not idempotent): it re-raises the error itself."""
    server.reply(Reply(hang=True))
    pool = urllib3.PoolManager(retries=Retry(total=3, read=3), timeout=urllib3.Timeout(connect=1, read=0.05))
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        pool.request("POST", server.url("/p"), body=b"x")
    (span,) = client_spans(instrumented.spans())
    assert span.name == "POST"
    assert span.attributes[semconv.RETRY_RESULT] == "not_retried"
    assert span.attributes[semconv.RETRY_ATTEMPTS] == 1
    assert semconv.RETRY_NAME not in span.attributes  # on the metric points only (docs/telemetry.md, "Decisions")
    (point,) = instrumented.metric_points(semconv.METRIC_RETRY_ATTEMPTS)
    assert point.attributes[semconv.RETRY_NAME] == "POST 127.0.0.1"
    assert point.attributes[semconv.RETRY_RESULT] == "not_retried"


def test_status_not_retried_is_not_retried(instrumented: Otel, server: ScriptedServer) -> None:
    server.reply(Reply(404))
    assert session(**RETRY_503).get(server.url("/missing")).status_code == 404
    (span,) = client_spans(instrumented.spans())
    assert_attributes(span, attempt(server, 1, "/missing", **failed(404, None), **last(1, "not_retried")))
    assert span.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("client", ["urllib3", "requests"])
def test_status_exhaustion_raises(instrumented: Otel, server: ScriptedServer, client: str) -> None:
    server.reply(Reply(503), Reply(503), Reply(503))
    retry = {"total": 2, "status_forcelist": [503], "backoff_factor": 0}
    if client == "urllib3":
        with pytest.raises(urllib3.exceptions.MaxRetryError):
            urllib3.PoolManager(retries=Retry(**retry)).request("GET", server.url())
    else:
        with pytest.raises(requests.exceptions.RetryError):
            session(**retry).get(server.url())
    spans = client_spans(instrumented.spans())
    assert_attributes(spans[2], attempt(server, 3, **failed(503, None), **last(3, "exhausted")))
    assert len(server.received) == 3


@pytest.mark.parametrize("client", ["urllib3", "requests"])
def test_last_response_returned_when_raise_on_status_is_off_is_exhausted(
    instrumented: Otel, server: ScriptedServer, client: str
) -> None:
    server.reply(Reply(503), Reply(503), Reply(503))
    retry = {"total": 2, "status_forcelist": [503], "backoff_factor": 0, "raise_on_status": False}
    if client == "urllib3":
        status = urllib3.PoolManager(retries=Retry(**retry)).request("GET", server.url()).status
    else:
        status = session(**retry).get(server.url()).status_code
    assert status == 503
    spans = client_spans(instrumented.spans())
    assert_attributes(spans[2], attempt(server, 3, **failed(503, None), **last(3, "exhausted")))


# --- redirects count as resends --------------------------------------------------------------------------------------


def test_requests_redirect_loop_counts_as_resends(instrumented: Otel, server: ScriptedServer) -> None:
    server.reply(Reply(503), Reply(302, {"Location": "/b"}), Reply(503))
    response = session(**RETRY_503).get(server.url("/a"))
    assert response.status_code == 200 and [r.status_code for r in response.history] == [302]
    spans = client_spans(instrumented.spans())
    assert_attributes(spans[0], attempt(server, 1, "/a", **failed(503)))
    assert_attributes(spans[1], attempt(server, 2, "/a", **{semconv.HTTP_RESPONSE_STATUS_CODE: 302, semconv.RETRY_DELAY: 0.0}))
    assert_attributes(spans[2], attempt(server, 3, "/b", **failed(503)))
    assert_attributes(spans[3], attempt(server, 4, "/b", **{semconv.HTTP_RESPONSE_STATUS_CODE: 200}, **last(4, "success")))
    assert server.traceparents() == [traceparent_of(s) for s in spans]


def test_pool_manager_redirect(instrumented: Otel, server: ScriptedServer) -> None:
    server.reply(Reply(301, {"Location": "{base}/moved"}))
    response = urllib3.PoolManager().request("GET", server.url("/old"))
    assert response.status == 200
    spans = client_spans(instrumented.spans())
    assert_attributes(spans[0], attempt(server, 1, "/old", **{semconv.HTTP_RESPONSE_STATUS_CODE: 301, semconv.RETRY_DELAY: 0.0}))
    assert_attributes(spans[1], attempt(server, 2, "/moved", **{semconv.HTTP_RESPONSE_STATUS_CODE: 200}, **last(2, "success")))


def test_pool_level_redirect_with_retry_after(instrumented: Otel, server: ScriptedServer, sleeps: list[float]) -> None:
    """A pool used directly follows same-host redirects itself (``sleep_for_retry``: Retry-After on a redirect)."""
    server.reply(Reply(307, {"Location": "/there", "Retry-After": "1"}))
    pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port)
    assert pool.urlopen("GET", "/here", redirect=True).status == 200
    assert sleeps == [1]
    spans = client_spans(instrumented.spans())
    assert_attributes(spans[0], attempt(server, 1, "/here", **{semconv.HTTP_RESPONSE_STATUS_CODE: 307, semconv.RETRY_DELAY: 1.0}))
    assert_attributes(spans[1], attempt(server, 2, "/there", **{semconv.HTTP_RESPONSE_STATUS_CODE: 200}, **last(2, "success")))


def test_too_many_redirects_is_exhausted(instrumented: Otel, server: ScriptedServer) -> None:
    server.default = Reply(302, {"Location": "/loop"})
    s = session(total=3)  # a policy that retries: with total=0 the request would be a plain one, untraced by us
    s.max_redirects = 2
    with pytest.raises(requests.exceptions.TooManyRedirects):
        s.get(server.url("/loop"))
    spans = client_spans(instrumented.spans())
    assert len(spans) == 3
    assert spans[-1].attributes[semconv.RETRY_RESULT] == "exhausted"
    assert spans[-1].attributes[semconv.RETRY_ATTEMPTS] == 3


def test_pool_used_directly_starts_a_request_per_urlopen(instrumented: Otel, server: ScriptedServer) -> None:
    server.reply(Reply(503))
    pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port, retries=Retry(**RETRY_503))
    assert pool.urlopen("GET", "/one").status == 200
    assert pool.urlopen("GET", "/two").status == 200
    spans = client_spans(instrumented.spans())
    assert [(s.attributes[semconv.RETRY_ATTEMPT], s.attributes.get(semconv.RETRY_ATTEMPTS)) for s in spans] == [
        (1, None),
        (2, 2),
        (1, 1),
    ]


# --- beside contrib: all four combinations ---------------------------------------------------------------------------


@pytest.fixture(params=["ours alone", "requests contrib", "urllib3 contrib", "both contrib"])
def combination(request: pytest.FixtureRequest, instrumented: Otel) -> Iterator[str]:
    kwargs = instrumented.kwargs()
    which: str = request.param
    if which in ("requests contrib", "both contrib"):
        RequestsInstrumentor().instrument(**kwargs)
    if which in ("urllib3 contrib", "both contrib"):
        URLLib3Instrumentor().instrument(**kwargs)
    yield which
    if which in ("requests contrib", "both contrib"):
        RequestsInstrumentor().uninstrument()
    if which in ("urllib3 contrib", "both contrib"):
        URLLib3Instrumentor().uninstrument()


CONTRIB_SCOPES = {
    "requests contrib": "opentelemetry.instrumentation.requests",
    "urllib3 contrib": "opentelemetry.instrumentation.urllib3",
    "both contrib": "opentelemetry.instrumentation.requests",  # requests' span suppresses urllib3's inside it
}


def test_combinations_503_503_200(combination: str, instrumented: Otel, server: ScriptedServer) -> None:
    server.reply(Reply(503), Reply(503))
    with instrumented.tracer_provider.get_tracer("test").start_as_current_span("caller"):
        assert session(**RETRY_503).get(server.url()).status_code == 200
    all_spans = instrumented.spans()
    spans = client_spans(all_spans)
    assert_no_client_in_client(all_spans)
    assert len(server.received) == 3
    if combination == "ours alone":
        assert [s.attributes[semconv.RETRY_ATTEMPT] for s in spans] == [1, 2, 3]
        assert server.traceparents() == [traceparent_of(s) for s in spans]
        return
    (span,) = spans  # one span for the whole request, contrib's, enriched; none of ours
    assert span.instrumentation_scope.name == CONTRIB_SCOPES[combination]
    assert span.attributes[semconv.HTTP_REQUEST_RESEND_COUNT] == 2
    assert span.attributes[semconv.RETRY_ATTEMPTS] == 3
    assert span.attributes[semconv.RETRY_RESULT] == "success"
    assert events_named(span, semconv.HTTP_RESEND_EVENT) == [
        {semconv.RETRY_ATTEMPT: 1, semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503", semconv.RETRY_DELAY: 0.0},
        {semconv.RETRY_ATTEMPT: 2, semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503", semconv.RETRY_DELAY: 0.0},
    ]
    assert server.traceparents() == [traceparent_of(span)] * 3  # contrib injected its own span's context


def test_combinations_redirects_and_exhaustion(combination: str, instrumented: Otel, server: ScriptedServer) -> None:
    server.reply(Reply(302, {"Location": "/b"}), Reply(503), Reply(503))
    with pytest.raises(requests.exceptions.RetryError):
        session(total=1, status_forcelist=[503], backoff_factor=0).get(server.url("/a"))
    all_spans = instrumented.spans()
    assert_no_client_in_client(all_spans)
    spans = client_spans(all_spans)
    assert len(server.received) == 3
    if combination == "ours alone":
        assert [s.attributes[semconv.RETRY_ATTEMPT] for s in spans] == [1, 2, 3]
        assert spans[-1].attributes[semconv.RETRY_RESULT] == "exhausted"
    elif combination == "urllib3 contrib":
        # contrib's urllib3 span covers one urlopen: the redirect hop and the two 503s are two spans of contrib's.
        first, second = spans
        assert first.attributes[semconv.RETRY_ATTEMPTS] == 1 and first.attributes[semconv.RETRY_RESULT] == "success"
        assert second.attributes[semconv.HTTP_REQUEST_RESEND_COUNT] == 2
        assert second.attributes[semconv.RETRY_ATTEMPTS] == 3
        assert second.attributes[semconv.RETRY_RESULT] == "exhausted"
        assert [e[semconv.RETRY_ATTEMPT] for e in events_named(second, semconv.HTTP_RESEND_EVENT)] == [1, 2]
    else:
        (span,) = spans
        assert span.attributes[semconv.HTTP_REQUEST_RESEND_COUNT] == 2
        assert span.attributes[semconv.RETRY_RESULT] == "exhausted"
        events = events_named(span, semconv.HTTP_RESEND_EVENT)
        assert [e.get(semconv.HTTP_RESPONSE_STATUS_CODE) for e in events] == [302, 503]


# --- behaviour, security, suppression, metrics, threads, uninstrument -------------------------------------------------


SCENARIOS = {
    "503,503,200": [Reply(503), Reply(503)],
    "429 retry-after": [Reply(429, {"Retry-After": "1"})],
    "exhausted": [Reply(503)] * 4,
    "redirect": [Reply(302, {"Location": "/r"}), Reply(503)],
    "404": [Reply(404)],
}


def run_scenario(server: ScriptedServer, replies: list[Reply], sleeps: list[float]) -> tuple[Any, ...]:
    server.received.clear()
    sleeps.clear()
    server.script[:] = list(replies)
    retry = Retry(total=3, status_forcelist=[429, 503], backoff_factor=0.1, backoff_jitter=0)
    try:
        outcome: Any = urllib3.PoolManager(retries=retry).request("GET", server.url("/s")).status
    except Exception as exc:  # noqa: BLE001 - the outcome is compared, whatever it is
        outcome = type(exc)
    try:
        via_requests: Any = session(total=3, status_forcelist=[429, 503], backoff_factor=0.1).get(server.url("/s"))
        via_requests = via_requests.status_code
    except Exception as exc:  # noqa: BLE001
        via_requests = type(exc)
    return outcome, via_requests, len(server.received), list(sleeps)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_behaviour_is_identical_with_and_without_instrumentation(
    otel: Otel, server: ScriptedServer, sleeps: list[float], scenario: str
) -> None:
    replies = SCENARIOS[scenario] * 2  # the script serves both clients
    bare = run_scenario(server, replies, sleeps)
    Urllib3RetryInstrumentor().instrument(**otel.kwargs())
    try:
        traced = run_scenario(server, replies, sleeps)
    finally:
        Urllib3RetryInstrumentor().uninstrument()
    assert traced == bare
    assert otel.spans()


def test_url_full_never_carries_credentials_or_signatures(instrumented: Otel, server: ScriptedServer) -> None:
    query = "?X-Goog-Signature=g&AWSAccessKeyId=a&Signature=s&sig=z&keep=1"
    pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port)
    pool.urlopen("GET", f"http://user:secret@127.0.0.1:{server.port}/x{query}", assert_same_host=False)
    session().get(server.url(f"/y{query}"))
    spans = client_spans(instrumented.spans())
    assert [s.attributes[semconv.URL_FULL] for s in spans] == [
        f"http://REDACTED:REDACTED@127.0.0.1:{server.port}/x"
        "?X-Goog-Signature=REDACTED&AWSAccessKeyId=REDACTED&Signature=REDACTED&sig=REDACTED&keep=1",
        server.url("/y?X-Goog-Signature=REDACTED&AWSAccessKeyId=REDACTED&Signature=REDACTED&sig=REDACTED&keep=1"),
    ]
    for span in spans:
        assert "secret" not in str(span.attributes) and "sig=z" not in str(span.attributes)


def test_general_suppression_silences_us_and_injects_nothing(instrumented: Otel, server: ScriptedServer) -> None:
    with suppress_instrumentation():
        session().get(server.url())
    assert instrumented.spans() == []
    assert server.traceparents() == [None]


def test_a_suppressed_request_inside_another_does_not_join_it(instrumented: Otel, server: ScriptedServer) -> None:
    """A response hook of a request (its scope still open) sends one more request with instrumentation suppressed:
    that one is not traced, and not counted as an attempt of the request whose hook sent it."""
    s = session(**RETRY_503)

    def hook(response: requests.Response, **_: Any) -> None:
        if response.request.path_url == "/outer":
            with suppress_instrumentation():
                s.get(server.url("/inner"))

    server.reply(Reply(503))
    assert s.get(server.url("/outer"), hooks={"response": hook}).status_code == 200
    assert len(server.received) == 3
    spans = client_spans(instrumented.spans())
    assert [s.attributes[semconv.URL_FULL] for s in spans] == [server.url("/outer")] * 2
    assert spans[-1].attributes[semconv.RETRY_ATTEMPTS] == 2
    assert server.traceparents()[2] is None


def test_contribs_http_suppression_does_not_silence_us(instrumented: Otel, server: ScriptedServer) -> None:
    with suppress_http_instrumentation():
        session().get(server.url())
    (span,) = client_spans(instrumented.spans())
    assert server.traceparents() == [traceparent_of(span)]


def test_our_own_otlp_export_is_not_traced(instrumented: Otel, server: ScriptedServer) -> None:
    """The OTLP/HTTP exporter uses requests; the SDK exports under the general suppression, which we honour."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    instrumented.tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.url("/v1/traces"))))
    with instrumented.tracer_provider.get_tracer("test").start_as_current_span("work"):
        pass
    assert [(r.method, r.path) for r in server.received] == [("POST", "/v1/traces")]
    assert [s.name for s in instrumented.spans()] == ["work"]


def test_retry_metrics_leave_out_only_requests_that_succeeded_at_once(instrumented: Otel, server: ScriptedServer) -> None:
    """A request that succeeded at its first attempt records no retry metric points (the common request; its count
    and latency are HTTP metrics' job); one that was retried, or failed without a retry, does."""
    s = session(**RETRY_503)
    assert s.get(server.url("/at-once")).status_code == 200
    assert instrumented.metric_points(semconv.METRIC_RETRY_ATTEMPTS) == []
    assert instrumented.metric_points(semconv.METRIC_RETRY_DURATION) == []
    assert client_spans(instrumented.spans())[0].attributes[semconv.RETRY_RESULT] == semconv.RESULT_SUCCESS

    server.reply(Reply(503))
    assert s.get(server.url("/retried")).status_code == 200
    server.reply(Reply(404))
    assert s.get(server.url("/missing")).status_code == 404
    points = {
        (p.attributes[semconv.RETRY_RESULT], p.sum, p.count)
        for p in instrumented.metric_points(semconv.METRIC_RETRY_ATTEMPTS)
    }
    assert points == {(semconv.RESULT_SUCCESS, 2, 1), (semconv.RESULT_NOT_RETRIED, 1, 1)}
    durations = instrumented.metric_points(semconv.METRIC_RETRY_DURATION)
    assert sorted(p.attributes[semconv.RETRY_RESULT] for p in durations) == ["not_retried", "success"]
    assert all(p.count == 1 for p in durations)


def test_metrics_and_depth_inside_a_tenacity_attempt(instrumented: Otel, server: ScriptedServer) -> None:
    import tenacity

    from otel_resilience.instrumentation.tenacity import TenacityInstrumentor

    server.reply(Reply(503))
    TenacityInstrumentor().instrument(**instrumented.kwargs())
    try:

        @tenacity.retry(stop=tenacity.stop_after_attempt(2))
        def fetch() -> int:
            return int(session(**RETRY_503).get(server.url()).status_code)

        assert fetch() == 200
    finally:
        TenacityInstrumentor().uninstrument()
    http_points = [
        p for p in instrumented.metric_points(semconv.METRIC_RETRY_ATTEMPTS) if p.attributes[semconv.RETRY_NAME] == "GET 127.0.0.1"
    ]
    (point,) = http_points
    assert dict(point.attributes) == {semconv.RETRY_NAME: "GET 127.0.0.1", semconv.RETRY_RESULT: "success", semconv.RETRY_DEPTH: 2}
    assert point.count == 1 and point.sum == 2
    attempt_span = instrumented.span(fetch.__qualname__)
    for span in client_spans(instrumented.spans()):
        assert span.parent is not None and span.parent.span_id == attempt_span.get_span_context().span_id


def test_threads_sharing_one_adapter_keep_their_own_attempts(instrumented: Otel, server: ScriptedServer) -> None:
    server.reply(*[Reply(503)] * 4)
    shared = session(total=10, status_forcelist=[503], backoff_factor=0)
    tracer = instrumented.tracer_provider.get_tracer("test")
    statuses: list[int] = []

    def work(i: int) -> None:
        with tracer.start_as_current_span(f"caller {i}"):
            statuses.append(shared.get(server.url(f"/t{i}")).status_code)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 4
    spans = instrumented.spans()
    callers = {s.get_span_context().span_id: s.name for s in spans if s.name.startswith("caller")}
    by_caller: dict[str, list[Any]] = {}
    for span in client_spans(spans):
        assert span.parent is not None
        by_caller.setdefault(callers[span.parent.span_id], []).append(span)
    assert sum(len(v) for v in by_caller.values()) == 8 == len(server.received)
    for caller, attempts in by_caller.items():
        path = "/t" + caller.split()[1]
        assert [s.attributes[semconv.URL_FULL] for s in attempts] == [server.url(path)] * len(attempts)
        assert [s.attributes[semconv.RETRY_ATTEMPT] for s in attempts] == list(range(1, len(attempts) + 1))
        assert attempts[-1].attributes[semconv.RETRY_ATTEMPTS] == len(attempts)


def test_uninstrument_restores_originals(otel: Otel, server: ScriptedServer) -> None:
    from urllib3.connectionpool import HTTPConnectionPool
    from urllib3.util import retry as retry_module

    owners = [
        (HTTPConnectionPool, "_make_request"),
        (urllib3.PoolManager, "urlopen"),
        (requests.Session, "request"),
        (HTTPAdapter, "send"),
        (Retry, "is_retry"),
        (Retry, "increment"),
        (retry_module, "time"),  # the wait observer stands in for the module's `time`
    ]
    originals = {(owner, name): vars(owner)[name] for owner, name in owners}
    Urllib3RetryInstrumentor().instrument(**otel.kwargs())
    session().get(server.url())  # goes live: the Retry hooks are in place too
    assert all(vars(owner)[name] is not originals[(owner, name)] for owner, name in owners)
    Urllib3RetryInstrumentor().uninstrument()
    assert all(vars(owner)[name] is originals[(owner, name)] for owner, name in owners)
    session().get(server.url())
    assert len(client_spans(otel.spans())) == 1


def test_span_kinds(instrumented: Otel, server: ScriptedServer) -> None:
    session().get(server.url())
    assert [s.kind for s in instrumented.spans()] == [SpanKind.CLIENT]


@pytest.mark.parametrize("client", ["urllib3", "requests"])
def test_credentials_in_the_url_the_app_gave_are_shown_redacted(
    instrumented: Otel, server: ScriptedServer, client: str
) -> None:
    url = f"http://user:secret@127.0.0.1:{server.port}/c?sig=z"
    if client == "urllib3":
        urllib3.PoolManager().request("GET", url)
    else:
        session().get(url)
    (span,) = client_spans(instrumented.spans())
    assert span.attributes[semconv.URL_FULL] == f"http://REDACTED:REDACTED@127.0.0.1:{server.port}/c?sig=REDACTED"


def test_digest_auth_resend_after_401_is_a_resend_of_the_same_request(instrumented: Otel, server: ScriptedServer) -> None:
    """requests' ``HTTPDigestAuth`` answers a 401 by sending again through the adapter, inside the session's call."""
    server.reply(Reply(401, {"WWW-Authenticate": 'Digest realm="r", nonce="n", qop="auth"'}))
    s = session(total=3)  # requests' default adapter (Retry(0)) makes plain requests, which we leave alone
    response = s.get(server.url("/private"), auth=requests.auth.HTTPDigestAuth("user", "secret"))
    assert response.status_code == 200
    assert server.received[1].headers["authorization"].startswith("Digest ")
    first, second = client_spans(instrumented.spans())
    assert_attributes(first, attempt(server, 1, "/private", **failed(401)))
    assert_attributes(second, attempt(server, 2, "/private", **{semconv.HTTP_RESPONSE_STATUS_CODE: 200}, **last(2, "success")))
    assert "secret" not in str(second.attributes)


def test_sessions_made_before_instrumenting_are_traced_and_no_sdk_records_nothing(otel: Otel, server: ScriptedServer) -> None:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    early = session(**RETRY_503)
    Urllib3RetryInstrumentor().instrument(tracer_provider=NoOpTracerProvider(), meter_provider=NoOpMeterProvider())
    try:
        server.reply(Reply(503))
        assert early.get(server.url()).status_code == 200
        assert server.traceparents() == [None, None]  # nothing records: nothing injected either
    finally:
        Urllib3RetryInstrumentor().uninstrument()
    Urllib3RetryInstrumentor().instrument(**otel.kwargs())
    try:
        assert early.get(server.url()).status_code == 200
    finally:
        Urllib3RetryInstrumentor().uninstrument()
    assert len(client_spans(otel.spans())) == 1


# --- errors inside otel_resilience itself --------------------------------------------------------------------------------

# Where a failure of ours is injected: what the guarded entry points (the adapter's hooks, `core.http`'s requests and
# scopes) call, so that the guard under test is the one in place, and every step of a retried request is covered.
HTTP_FAULTS: list[tuple[Any, str]] = [
    (http_core, "credentials_host"),  # a scope opens
    (http_core, "current_client_span"),  # an attempt starts: is contrib's span there?
    (http_core, "attempt_attributes"),  # our span's attributes
    (adapter_module, "_headers_copy"),  # its context is injected
    (http_core, "status_error_type"),  # it ends
    (adapter_module, "_verdict_pending"),  # urllib3 is to decide (the check of its is_retry hook)
    (http_core.HttpRequest, "retrying"),  # urllib3 waits
    (http_core.HttpRequest, "_report"),  # the ended attempt's span is finished
    (Telemetry, "record_retry"),  # its metric points
]


@pytest.mark.parametrize("owner,name", HTTP_FAULTS, ids=[f"{getattr(owner, '__name__', '')}.{name}" for owner, name in HTTP_FAULTS])
def test_an_error_in_our_code_never_reaches_the_app(
    owner: Any,
    name: str,
    otel: Otel,
    server: ScriptedServer,
    sleeps: list[float],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from otel_resilience.core import _safety

    def run() -> tuple[int, int, list[float]]:
        server.received.clear()
        sleeps.clear()
        server.reply(Reply(503), Reply(503))
        response = session(total=3, status_forcelist=[503], backoff_factor=0.1).get(server.url("/?a=1"))
        return response.status_code, len(server.received), list(sleeps)

    bare = run()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"injected failure in {name}")

    monkeypatch.setattr(_safety, "_reported", set())
    monkeypatch.setattr(owner, name, broken)
    Urllib3RetryInstrumentor().instrument(**otel.kwargs())
    try:
        with caplog.at_level(logging.WARNING, logger="otel_resilience"):
            traced = [run(), run()]
    finally:
        Urllib3RetryInstrumentor().uninstrument()
    assert traced == [bare, bare] == [(200, 3, [0.2])] * 2  # urllib3 waits 0 before its first retry
    assert_injected_failure_reported(caplog, f"injected failure in {name}")
