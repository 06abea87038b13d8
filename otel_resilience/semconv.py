"""The telemetry contract: every span name, attribute, event, value and metric otel_resilience emits.

These names are the product's contract with its users (dashboards, alerts, tail-sampling policies and
``collector-config.yaml`` all depend on them), so they live here once and nowhere else. They follow the open
OpenTelemetry semantic-conventions proposal #2355 (``retry.*``, ``circuitbreaker.*``) so users can migrate when it
lands, plus the stable HTTP conventions for HTTP attempts. A change to any name needs a written reason in
``docs/telemetry.md``.
"""

from __future__ import annotations

from typing import Final

# --- retry operation and attempt spans -------------------------------------------------------------------------

RETRY_OPERATION_SPAN_PREFIX: Final = "retry"
"""An operation span is named ``retry {qualname}``; its attempt spans are named ``{qualname}``."""

RETRY_NAME: Final = "retry.name"
RETRY_DEPTH: Final = "retry.depth"
RETRY_ATTEMPTS: Final = "retry.attempts"
RETRY_MAX_ATTEMPTS: Final = "retry.max_attempts"
RETRY_RESULT: Final = "retry.result"
RETRY_TOTAL_DELAY: Final = "retry.total_delay"
RETRY_ATTEMPT: Final = "retry.attempt"
RETRY_DELAY: Final = "retry.delay"
RETRY_STOP_REASON: Final = "retry.stop_reason"
"""Why an ``exhausted`` operation stopped, where the library says and it is not the attempt limit."""
STOP_REASON_TIMEOUT: Final = "timeout"
"""`retry.stop_reason`: the policy's deadline or overall timeout ended it (google-api-core's ``timeout``)."""
RETRY_BUDGET_EXHAUSTED: Final = "retry.budget_exhausted"
"""``true`` when a retry budget (botocore's retry quota in its standard and adaptive modes) refused the retry that
would have followed: the operation ended ``exhausted`` before its attempt limit. On the span that carries
``retry.result`` and on both retry metric points; absent otherwise."""

RETRY_ATTEMPT_EVENT: Final = "retry.attempt"
"""With ``attempt_spans="none"`` each attempt is an event of this name on the operation span."""

# `retry.result` values
RESULT_SUCCESS: Final = "success"
RESULT_EXHAUSTED: Final = "exhausted"
RESULT_NOT_RETRIED: Final = "not_retried"
RESULT_ABORTED: Final = "aborted"
RETRY_RESULTS: Final = (RESULT_SUCCESS, RESULT_EXHAUSTED, RESULT_NOT_RETRIED, RESULT_ABORTED)

ERROR_TYPE: Final = "error.type"
REJECTED_RESULT: Final = "rejected_result"
"""`error.type` of an attempt whose return value the policy rejected (``retry_if_result``, ``on_predicate``)."""

# --- exception events (OpenTelemetry's own names) --------------------------------------------------------------

EXCEPTION_EVENT: Final = "exception"
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_STACKTRACE: Final = "exception.stacktrace"

# --- circuit breakers ------------------------------------------------------------------------------------------

BREAKER_SPAN_PREFIX: Final = "circuitbreaker"
"""A guarded call's span is named ``circuitbreaker {circuitbreaker.name}``."""

BREAKER_NAME: Final = "circuitbreaker.name"
BREAKER_STATE: Final = "circuitbreaker.state"
BREAKER_PREVIOUS_STATE: Final = "circuitbreaker.previous_state"
BREAKER_RESULT: Final = "circuitbreaker.result"
BREAKER_FAILURE_COUNT: Final = "circuitbreaker.failure_count"
BREAKER_STATE_CHANGE_EVENT: Final = "circuitbreaker.state_change"

# `circuitbreaker.state` values
STATE_CLOSED: Final = "closed"
STATE_OPEN: Final = "open"
STATE_HALF_OPEN: Final = "half_open"
BREAKER_STATES: Final = (STATE_CLOSED, STATE_OPEN, STATE_HALF_OPEN)

# `circuitbreaker.result` values
CALL_SUCCESS: Final = "success"
CALL_FAILURE: Final = "failure"
CALL_REJECTED: Final = "rejected"
CALL_IGNORED: Final = "ignored"
BREAKER_RESULTS: Final = (CALL_SUCCESS, CALL_FAILURE, CALL_REJECTED, CALL_IGNORED)

# --- HTTP (stable semantic conventions) ------------------------------------------------------------------------

HTTP_REQUEST_METHOD: Final = "http.request.method"
HTTP_REQUEST_METHOD_ORIGINAL: Final = "http.request.method_original"
HTTP_METHOD_OTHER: Final = "_OTHER"
"""`http.request.method` of a method the conventions do not know (the original goes in ``method_original``)."""
HTTP_SPAN_NAME_OTHER: Final = "HTTP"
"""Span name of an HTTP attempt whose method is ``_OTHER``."""
HTTP_REQUEST_RESEND_COUNT: Final = "http.request.resend_count"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"
URL_FULL: Final = "url.full"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
HTTP_RESEND_EVENT: Final = "http.request.resend"
"""Beside contrib's one-span-per-request instrumentation, each earlier attempt is an event of this name."""

# --- remote procedure calls (a retry loop above the HTTP client names its attempts after the call) ------------------

RPC_SYSTEM: Final = "rpc.system"
RPC_SERVICE: Final = "rpc.service"
RPC_METHOD: Final = "rpc.method"
RPC_SYSTEM_AWS: Final = "aws-api"
"""`rpc.system` of an AWS SDK call, as the AWS SDK conventions (and contrib's botocore instrumentation) name it."""
CLOUD_REGION: Final = "cloud.region"

# --- metrics -----------------------------------------------------------------------------------------------------

METRIC_RETRY_ATTEMPTS: Final = "retry.attempts"
METRIC_RETRY_DURATION: Final = "retry.duration"
METRIC_BREAKER_CALLS: Final = "circuitbreaker.calls"
METRIC_BREAKER_STATE: Final = "circuitbreaker.state"
METRIC_BREAKER_TRANSITIONS: Final = "circuitbreaker.transitions"

RETRY_ATTEMPTS_BUCKETS: Final = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)
RETRY_DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

# --- instrumentation scopes ------------------------------------------------------------------------------------

SCOPE_PREFIX: Final = "otel_resilience"
"""Tracer and meter names are ``otel_resilience.{library}``: the scope tells which library produced the data."""
