"""A request whose own policy makes no retries is not a retried operation: urllib3 ``retries=False``,
``Retry(False)``, ``Retry(0)``, ``total=0`` (requests' default adapter), httpx's default ``retries=0``. Alone, we make
no span, inject nothing and record no retry metric point; beside contrib's requests, urllib3 or httpx
instrumentation, contrib's span is exactly as contrib made it without us. Inside a retry loop of ours (tenacity here)
the request is an attempt of that loop, which that loop's spans show."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
import tenacity
import urllib3
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from otel_resilience.instrumentation.httpx import HttpxRetryInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from otel_resilience.instrumentation.urllib3 import Urllib3RetryInstrumentor
from tests.conftest import Otel
from tests.support.http_support import Reply, ScriptedServer, server

__all__ = ["server"]


def _session(retries: Any) -> requests.Session:
    s = requests.Session()
    s.mount("http://", HTTPAdapter(max_retries=retries))
    return s


REQUESTS: dict[str, Callable[[str], int]] = {
    "requests default (Retry(0))": lambda url: requests.get(url).status_code,
    "requests Retry(False)": lambda url: _session(Retry(False)).get(url).status_code,
    "requests total=0 with status_forcelist": lambda url: _session(
        Retry(total=0, status_forcelist=[503], raise_on_status=False)
    ).get(url).status_code,
    "urllib3 retries=False": lambda url: urllib3.PoolManager().request("GET", url, retries=False).status,
    "urllib3 Retry(0)": lambda url: urllib3.PoolManager(retries=Retry(0)).request("GET", url).status,
    "urllib3 every counter 0": lambda url: urllib3.PoolManager(
        retries=Retry(total=None, connect=0, read=0, redirect=0, status=0, other=0)
    ).request("GET", url).status,
    "httpx default (retries=0)": lambda url: httpx.get(url).status_code,
}

CONTRIB = {
    "alone": [],
    "beside contrib requests": [RequestsInstrumentor],
    "beside contrib urllib3": [URLLib3Instrumentor],
    "beside contrib httpx": [HTTPXClientInstrumentor],
}


def _retry_names(attributes: Any) -> list[str]:
    return [k for k in (attributes or {}) if k.startswith("retry.") or k == "http.request.resend_count"]


def _run(otel: Otel, make: Callable[[str], int], url: str, contrib: list[Any], ours: bool) -> list[tuple[Any, ...]]:
    """The request with contrib's instrumentations given (and ours or not): what the spans were, as comparable data."""
    otel.exporter.clear()
    instrumentors = [cls() for cls in contrib]
    if ours:
        instrumentors += [Urllib3RetryInstrumentor(), HttpxRetryInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(**otel.kwargs())
    try:
        assert make(url) == 503
    finally:
        for instrumentor in reversed(instrumentors):
            instrumentor.uninstrument()
    return [
        (s.name, s.kind, s.status.status_code, s.instrumentation_scope.name, dict(s.attributes or {}), [e.name for e in s.events])
        for s in otel.spans()
    ]


@pytest.mark.parametrize("contrib", CONTRIB)
@pytest.mark.parametrize("form", REQUESTS)
def test_a_request_that_makes_no_retries_is_left_alone(otel: Otel, server: ScriptedServer, form: str, contrib: str) -> None:
    server.default = Reply(503)
    url = server.url("/plain")
    with_us = _run(otel, REQUESTS[form], url, CONTRIB[contrib], ours=True)
    assert len(server.received) == 1
    assert all(not _retry_names(attributes) for *_, attributes, _events in with_us), with_us
    assert all(not any(name.startswith("http.request.resend") for name in events) for *_, events in with_us)
    assert otel.metric_points("retry.attempts") == [] and otel.metric_points("retry.duration") == []
    assert "traceparent" not in server.received[0].headers or contrib != "alone"  # we injected nothing
    without_us = _run(otel, REQUESTS[form], url, CONTRIB[contrib], ours=False)
    if contrib == "alone":
        assert with_us == without_us == []
    else:  # contrib's span, if any, exactly as contrib makes it without us (ids and times aside)
        assert with_us == without_us


def test_a_request_that_retries_is_still_ours(otel: Otel, server: ScriptedServer) -> None:
    """The rule keys on the policy, not the outcome: ``Retry(1)`` that did not need its retry is still ours."""
    Urllib3RetryInstrumentor().instrument(**otel.kwargs())
    try:
        assert urllib3.PoolManager(retries=Retry(1)).request("GET", server.url()).status == 200
    finally:
        Urllib3RetryInstrumentor().uninstrument()
    (span,) = otel.spans()
    assert span.attributes["retry.attempts"] == 1 and span.attributes["retry.result"] == "success"


@pytest.fixture
def tenacity_and_urllib3(otel: Otel) -> Iterator[Otel]:
    TenacityInstrumentor().instrument(**otel.kwargs())
    Urllib3RetryInstrumentor().instrument(**otel.kwargs())
    yield otel
    Urllib3RetryInstrumentor().uninstrument()
    TenacityInstrumentor().uninstrument()


def test_inside_a_loop_of_ours_it_is_that_loops_attempt(tenacity_and_urllib3: Otel, server: ScriptedServer) -> None:
    """tenacity retrying ``requests.get`` (no retries of its own): tenacity's attempts are the attempts; the HTTP
    requests add no retried operation, no CLIENT span and no metric point of their own."""
    otel = tenacity_and_urllib3
    server.reply(Reply(503), Reply(503))

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none(), retry=tenacity.retry_if_result(lambda s: s >= 500))
    def fetch() -> int:
        return requests.get(server.url("/t")).status_code

    assert fetch() == 200
    assert len(server.received) == 3
    spans = otel.spans()
    qualname = fetch.__wrapped__.__qualname__  # type: ignore[attr-defined]
    assert [s.name for s in spans] == [qualname] * 3 + [f"retry {qualname}"]
    assert spans[-1].attributes["retry.attempts"] == 3
    names = {dict(p.attributes)["retry.name"] for p in otel.metric_points("retry.attempts")}
    assert names == {spans[-1].attributes["retry.name"]}
