"""The core: library-neutral retry and breaker events turned into spans and metrics.

Adapters (one module per library under `otel_resilience.instrumentation`) translate their library's hooks into the
events of `RetryOperation` and `BreakerCall`; all span and metric creation lives here, once.
"""

from otel_resilience.core._safety import never_raises, report_internal_error
from otel_resilience.core.breaker import BreakerCall, normalise_state
from otel_resilience.core.config import SETTINGS, Settings
from otel_resilience.core.errors import error_type, redact
from otel_resilience.core.registry import REGISTRY, BreakerEntry, breakers
from otel_resilience.core.retry import RetryOperation, current_depth
from otel_resilience.core.telemetry import Telemetry

__all__ = [
    "REGISTRY",
    "SETTINGS",
    "BreakerCall",
    "BreakerEntry",
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
