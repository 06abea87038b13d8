"""The core: library-neutral retry, HTTP and breaker events turned into spans and metrics, all made here, once.

Adapters (one module per library under `otel_resilience.instrumentation`) start an observation in its own module
(`RetryOperation.start`, `HttpRequest.start`, `BreakerCall.start`) and report what their library did.
"""

from otel_resilience.core._safety import never_raises, report_internal_error
from otel_resilience.core.breaker import BreakerCall, normalise_state
from otel_resilience.core.config import SETTINGS, Settings
from otel_resilience.core.errors import error_type, redact
from otel_resilience.core.http import HttpRequest
from otel_resilience.core.registry import REGISTRY, BreakerEntry, breakers
from otel_resilience.core.retry import ProxiedAttempts, RetryOperation, current_depth
from otel_resilience.core.telemetry import Telemetry

__all__ = [
    "REGISTRY",
    "SETTINGS",
    "BreakerCall",
    "BreakerEntry",
    "HttpRequest",
    "ProxiedAttempts",
    "RetryOperation",
    "Settings",
    "Telemetry",
    "breakers",
    "current_depth",
    "error_type",
    "never_raises",
    "normalise_state",
    "redact",
    "report_internal_error",
]
