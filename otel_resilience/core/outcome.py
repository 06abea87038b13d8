"""The rules that name how a retry, an HTTP request or a breaker call ended, in one place: adapters report facts (what
the library decided, what escaped), and these functions turn them into `retry.result` and `circuitbreaker.result`
values as docs/telemetry.md defines them."""

from __future__ import annotations

from otel_resilience import semconv


def is_abort(error: BaseException | None) -> bool:
    """A `BaseException` that is not an `Exception` (cancellation, KeyboardInterrupt, SystemExit) aborts a retry."""
    return error is not None and not isinstance(error, Exception)


def status_error_type(status: int | None) -> str | None:
    """An HTTP client attempt failed when its status is 4xx or 5xx: its `error.type` is the code as a string."""
    return str(status) if status is not None and status >= 400 else None


def final_result(*, retry_wanted: bool, failed: bool, error: BaseException | None = None) -> str:
    """The library's verdict on its last attempt: it wanted another attempt but its stop condition ended the loop
    (``exhausted``), or it accepted the attempt, which succeeded (``success``) or failed with what the policy does not
    retry (``not_retried``). `error`, what escaped, wins when it aborts."""
    if is_abort(error):
        return semconv.RESULT_ABORTED
    if retry_wanted:
        return semconv.RESULT_EXHAUSTED
    return semconv.RESULT_NOT_RETRIED if failed else semconv.RESULT_SUCCESS


def loop_result(*, failed: bool, spent: bool, error: BaseException | None = None) -> str:
    """The result of a retry loop above the HTTP client (botocore's, an SDK's), which stops when its attempts or its
    retry budget are `spent`: ``success`` when its last attempt did not fail; ``exhausted`` when it failed with
    nothing left to spend; else ``not_retried`` (its policy did not retry what happened). `error`, what escaped, wins
    when it aborts."""
    return final_result(retry_wanted=failed and spent, failed=failed, error=error)


def operation_result(verdict: str | None, error: BaseException | None, last_attempt_failed: bool) -> str:
    """A retried operation's result: the library's verdict when an adapter heard one; else ``exhausted`` when the
    last attempt failed or an error escaped, ``success`` otherwise. An aborting `error` wins over everything."""
    if is_abort(error):
        return semconv.RESULT_ABORTED
    if verdict is not None:
        return verdict
    return semconv.RESULT_EXHAUSTED if error is not None or last_attempt_failed else semconv.RESULT_SUCCESS


def proxied_result(verdict: str | None, error: BaseException | None, last_attempt_error: BaseException | None) -> str:
    """The result of a loop run through a stand-in for the app's function, when the library gave no verdict on its
    way out: ``success`` when nothing escaped; ``not_retried`` when the last attempt's own exception escaped (one the
    policy does not retry); ``aborted`` when something else escaped (the library's machinery or an app's hook between
    attempts raised: the loop was abandoned)."""
    if verdict is not None and not is_abort(error):
        return verdict
    if error is None:
        return semconv.RESULT_SUCCESS
    if error is last_attempt_error and not is_abort(error):
        return semconv.RESULT_NOT_RETRIED
    return semconv.RESULT_ABORTED


def request_result(
    verdict: str | None, error: BaseException | None, mapped: str | None, last_attempt_failed: bool
) -> str:
    """An HTTP request's result: `mapped` (an adapter's reading of the escaping error, e.g. ``TooManyRedirects`` is
    ``exhausted``), else the verdict of the layer that made the attempts, except that an error escaping after a
    successful verdict was retried by nobody (``not_retried``); with no verdict, ``exhausted`` when the last attempt
    failed, ``not_retried`` when an error escaped after it succeeded, else ``success``. Aborting errors win."""
    if is_abort(error):
        return semconv.RESULT_ABORTED
    if mapped is not None:
        return mapped
    if verdict is not None:
        return semconv.RESULT_NOT_RETRIED if error is not None and verdict == semconv.RESULT_SUCCESS else verdict
    if last_attempt_failed:
        return semconv.RESULT_EXHAUSTED
    return semconv.RESULT_SUCCESS if error is None else semconv.RESULT_NOT_RETRIED


def breaker_result(*, refused: bool, failed: bool, error: BaseException | None) -> str:
    """A breaker call's result: ``rejected`` if the breaker refused it, ``failure`` if the breaker counted a failure,
    ``ignored`` if it raised an exception the breaker did not count, else ``success``."""
    if refused:
        return semconv.CALL_REJECTED
    if failed:
        return semconv.CALL_FAILURE
    return semconv.CALL_SUCCESS if error is None else semconv.CALL_IGNORED


def abandoned_result(left_after_success: bool) -> str:
    """A loop the app left before the library concluded (``return`` or ``break`` inside it, or the loop dropped):
    ``success`` when it left right after a successful attempt (docs/telemetry.md, "Decisions"), else ``aborted``."""
    return semconv.RESULT_SUCCESS if left_after_success else semconv.RESULT_ABORTED
