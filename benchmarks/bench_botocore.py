"""botocore's retries: a boto3 S3 ``ListBuckets`` against a loopback server in another process, answered at once
(one attempt) or 503, 503, 200 (three attempts; botocore's sleeps patched out), in these variants, all in the same run:

- ``bare``: boto3 alone;
- ``no_sdk``: our botocore instrumentation, no SDK configured;
- ``instrumented``: ours alone, with the SDK (one CLIENT span per attempt);
- ``contrib``: contrib's botocore instrumentation alone, with the same SDK (one span per API call);
- ``instrumented_with_contrib``: both (contrib's span, enriched by us).

As in `benchmarks.bench_http`, the timer is the client process's CPU time and each variant's least disturbed call is
read: (instrumented − bare) ÷ attempts ÷ (contrib − bare) is one attempt of ours against contrib's per-call cost. A
boto3 call costs the client a few ms of CPU (signing, serialising, parsing), so the differences are small beside the
call and beside the machine's noise. Nothing here asserts on time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from opentelemetry.instrumentation.botocore import BotocoreInstrumentor

from benchmarks.bench_http import CPU, STATISTIC, Replies, serving
from benchmarks.conftest import instrumented_fixtures, variant
from otel_resilience.instrumentation.botocore import BotocoreRetryInstrumentor

S3_REPLIES = Replies(
    ok=b'<?xml version="1.0" encoding="UTF-8"?><ListAllMyBucketsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Owner><ID>o</ID></Owner><Buckets></Buckets></ListAllMyBucketsResult>",
    error=b"<Error><Code>SlowDown</Code><Message>m</Message></Error>",
    headers=("Content-Type: application/xml",),
)

SCENARIOS = {"S3 ListBuckets": "/ok", "S3 ListBuckets 503,503,200": "/flaky"}
ATTEMPTS = {"S3 ListBuckets": 1, "S3 ListBuckets 503,503,200": 3}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serving(replies=S3_REPLIES) as url:
        yield url


@pytest.fixture(autouse=True)
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's jittered waits between attempts cost no CPU but would stretch each round: not waited."""
    monkeypatch.setattr(time, "sleep", lambda seconds: None)


def lister(base_url: str, scenario: str) -> Callable[[], int]:
    """One call is one API call, however many attempts; the client is made (and connected) once."""
    s3 = boto3.client(
        "s3",
        endpoint_url=base_url + SCENARIOS[scenario],
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="dummy-secret",
        # The legacy mode: the standard mode's retry quota (a budget shared by the client's calls) would run dry after
        # some hundred calls answered 503, 503, 200, and the rounds would then end in errors.
        config=Config(retries={"mode": "legacy", "total_max_attempts": 3}),
    )

    def call() -> int:
        return int(s3.list_buckets()["ResponseMetadata"]["RetryAttempts"])

    while call() != ATTEMPTS[scenario] - 1:  # aligns the 503, 503, 200 cycle after the connection is made
        pass
    return call


ours, ours_no_sdk = instrumented_fixtures(lambda _request: BotocoreRetryInstrumentor())
contrib, _ = instrumented_fixtures(lambda _request: BotocoreInstrumentor())


def measure(benchmark: Any, scenario: str, name: str, base_url: str) -> None:
    variant(benchmark, f"botocore {scenario}", name)
    benchmark.extra_info["attempts"] = ATTEMPTS[scenario]
    benchmark.extra_info["statistic"] = STATISTIC
    assert benchmark(lister(base_url, scenario)) == ATTEMPTS[scenario] - 1


VARIANTS = {
    "bare": (),
    "no_sdk": ("ours_no_sdk",),
    "instrumented": ("ours",),
    "contrib": ("contrib",),
    "instrumented_with_contrib": ("ours", "contrib"),
}
"""Each variant and the fixtures that set it up."""


@CPU
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name", VARIANTS)
def test_variant(benchmark: Any, scenario: str, name: str, base_url: str, request: pytest.FixtureRequest) -> None:
    for fixture in VARIANTS[name]:
        request.getfixturevalue(fixture)
    measure(benchmark, scenario, name, base_url)
