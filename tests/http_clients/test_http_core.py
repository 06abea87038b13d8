"""The library-neutral HTTP pieces of the core: names and attributes of an attempt, and scopes that never fail."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanKind

from otel_resilience import semconv
from otel_resilience.core import Telemetry, http
from tests.conftest import Otel
from tests.support.http_support import assert_attributes


def test_unknown_methods_are_other_with_the_original() -> None:
    assert http.method_names("GET") == ("GET", "GET", None)
    assert http.method_names("get") == ("GET", "GET", "get")
    assert http.method_names("PURGE") == ("HTTP", "_OTHER", "PURGE")


@pytest.mark.parametrize(
    ("scheme", "host", "port", "target", "url"),
    [
        ("http", "example.com", 80, "/a?b=1", "http://example.com/a?b=1"),
        ("https", "example.com", 8443, "/", "https://example.com:8443/"),
        ("http", "::1", 8080, "/x", "http://[::1]:8080/x"),
        ("http", "proxy", 3128, "http://example.com/abs", "http://example.com/abs"),
    ],
)
def test_absolute_url(scheme: str, host: str, port: int, target: str, url: str) -> None:
    assert http.absolute_url(scheme, host, port, target) == url


def test_attempt_attributes_redact_and_mark_moved_credentials() -> None:
    name, attributes = http.attempt_attributes("PURGE", "https://h/p?sig=s&x=1", "h", 443, had_credentials=True)
    assert name == "HTTP"
    assert attributes == {
        semconv.HTTP_REQUEST_METHOD: "_OTHER",
        semconv.HTTP_REQUEST_METHOD_ORIGINAL: "PURGE",
        semconv.URL_FULL: "https://REDACTED:REDACTED@h/p?sig=REDACTED&x=1",
        semconv.SERVER_ADDRESS: "h",
        semconv.SERVER_PORT: 443,
    }


def test_credentials_host() -> None:
    assert http.credentials_host("http://u:p@Example.com:1/x") == "example.com"
    assert http.credentials_host("http://example.com/x@y") is None
    assert http.credentials_host("http://u@[not-an-ipv6/x") is None  # unreadable: no scope detail, no error
    assert http.credentials_host(None) is None


@pytest.mark.parametrize("url", ["http://u@[bad/", None, b"http://u:p@h/"])
def test_a_scope_runs_the_call_whatever_its_url(otel: Otel, url: object) -> None:
    telemetry = Telemetry("test", otel.tracer_provider, otel.meter_provider)
    wrapper = http.scope_wrapper(telemetry, lambda args, kwargs: url)
    assert wrapper(lambda x: x * 2, None, (21,), {}) == 42
    with pytest.raises(KeyError):
        wrapper({}.__getitem__, None, ("k",), {})
    assert otel.spans() == [] and otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS) == []  # no attempt: no request to tell of


def test_status_error_type() -> None:
    assert [http.status_error_type(s) for s in (None, 200, 302, 399, 400, 503)] == [None, None, None, None, "400", "503"]


def test_an_app_client_span_is_enriched_not_nested(otel: Otel) -> None:
    """Any recording CLIENT span current at the attempt (the app's own too) is the span of the request."""
    telemetry = Telemetry("test", otel.tracer_provider, otel.meter_provider)
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("call api", kind=SpanKind.CLIENT):
        request = http.HttpRequest.start(telemetry, "GET", "h")
        assert request is not None
        assert request.attempt_started("GET", "http://h/", "h", 80) is None
        request.attempt_ended(status=503)
        request.retrying(0.5)
        assert request.attempt_started("GET", "http://h/", "h", 80) is None
        request.attempt_ended(status=200)
        request.ended()
    (span,) = otel.spans()
    assert_attributes(
        span, {semconv.HTTP_REQUEST_RESEND_COUNT: 1, semconv.RETRY_ATTEMPTS: 2, semconv.RETRY_RESULT: "success"}
    )
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        (
            semconv.HTTP_RESEND_EVENT,
            {semconv.RETRY_ATTEMPT: 1, semconv.HTTP_RESPONSE_STATUS_CODE: 503, semconv.ERROR_TYPE: "503", semconv.RETRY_DELAY: 0.5},
        )
    ]
