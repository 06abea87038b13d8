"""The outcome rules of core/outcome.py, one table each: what adapters report, and the result it names."""

from __future__ import annotations

import asyncio

import pytest

from otel_resilience import semconv
from otel_resilience.core import outcome

ABORT = KeyboardInterrupt()
CANCELLED = asyncio.CancelledError()
FAILURE = ConnectionError("down")
OTHER = ValueError("bad")

SUCCESS, EXHAUSTED, NOT_RETRIED, ABORTED = (
    semconv.RESULT_SUCCESS, semconv.RESULT_EXHAUSTED, semconv.RESULT_NOT_RETRIED, semconv.RESULT_ABORTED,
)


def test_status_error_type() -> None:
    assert [outcome.status_error_type(s) for s in (None, 200, 302, 399, 400, 503)] == [None, None, None, None, "400", "503"]


@pytest.mark.parametrize(
    "retry_wanted,failed,error,expected",
    [
        (True, True, None, EXHAUSTED),
        (False, False, None, SUCCESS),
        (False, True, None, NOT_RETRIED),
        (False, True, FAILURE, NOT_RETRIED),
        (True, True, FAILURE, EXHAUSTED),
        (True, True, ABORT, ABORTED),
        (False, True, CANCELLED, ABORTED),
    ],
)
def test_final_result(retry_wanted: bool, failed: bool, error: BaseException | None, expected: str) -> None:
    assert outcome.final_result(retry_wanted=retry_wanted, failed=failed, error=error) == expected


@pytest.mark.parametrize(
    "failed,spent,error,expected",
    [
        (False, False, None, SUCCESS),
        (False, True, None, SUCCESS),  # the last allowed attempt succeeded
        (True, True, None, EXHAUSTED),
        (True, True, FAILURE, EXHAUSTED),
        (True, False, FAILURE, NOT_RETRIED),
        (True, False, None, NOT_RETRIED),
        (True, True, ABORT, ABORTED),
        (False, False, CANCELLED, ABORTED),
    ],
)
def test_loop_result(failed: bool, spent: bool, error: BaseException | None, expected: str) -> None:
    assert outcome.loop_result(failed=failed, spent=spent, error=error) == expected


@pytest.mark.parametrize(
    "verdict,error,last_failed,expected",
    [
        (None, None, False, SUCCESS),
        (None, None, True, EXHAUSTED),
        (None, FAILURE, False, EXHAUSTED),
        (NOT_RETRIED, FAILURE, True, NOT_RETRIED),
        (SUCCESS, ABORT, False, ABORTED),
    ],
)
def test_operation_result(verdict: str | None, error: BaseException | None, last_failed: bool, expected: str) -> None:
    assert outcome.operation_result(verdict, error, last_failed) == expected


@pytest.mark.parametrize(
    "verdict,error,last_error,expected",
    [
        (None, None, None, SUCCESS),
        (None, FAILURE, FAILURE, NOT_RETRIED),  # the last attempt's own error escaped: not retried
        (None, OTHER, FAILURE, ABORTED),  # something else escaped: the loop was abandoned
        (EXHAUSTED, FAILURE, FAILURE, EXHAUSTED),
        (EXHAUSTED, ABORT, FAILURE, ABORTED),
        (None, ABORT, ABORT, ABORTED),
    ],
)
def test_proxied_result(
    verdict: str | None, error: BaseException | None, last_error: BaseException | None, expected: str
) -> None:
    assert outcome.proxied_result(verdict, error, last_error) == expected


@pytest.mark.parametrize(
    "verdict,error,mapped,last_failed,expected",
    [
        (None, None, None, False, SUCCESS),
        (None, None, None, True, EXHAUSTED),
        (None, FAILURE, None, False, NOT_RETRIED),
        (SUCCESS, FAILURE, None, False, NOT_RETRIED),  # an error after a success verdict was retried by nobody
        (EXHAUSTED, None, None, True, EXHAUSTED),
        (SUCCESS, OTHER, EXHAUSTED, False, EXHAUSTED),  # e.g. TooManyRedirects
        (SUCCESS, CANCELLED, None, False, ABORTED),
    ],
)
def test_request_result(
    verdict: str | None, error: BaseException | None, mapped: str | None, last_failed: bool, expected: str
) -> None:
    assert outcome.request_result(verdict, error, mapped, last_failed) == expected


@pytest.mark.parametrize(
    "refused,failed,error,expected",
    [
        (True, False, None, semconv.CALL_REJECTED),
        (True, True, FAILURE, semconv.CALL_REJECTED),
        (False, True, FAILURE, semconv.CALL_FAILURE),
        (False, False, FAILURE, semconv.CALL_IGNORED),
        (False, False, None, semconv.CALL_SUCCESS),
    ],
)
def test_breaker_result(refused: bool, failed: bool, error: BaseException | None, expected: str) -> None:
    assert outcome.breaker_result(refused=refused, failed=failed, error=error) == expected


def test_abandoned_result() -> None:
    assert outcome.abandoned_result(True) == SUCCESS and outcome.abandoned_result(False) == ABORTED
