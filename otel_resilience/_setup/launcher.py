"""Our ``opentelemetry_pre_instrument`` hooks: what the launcher needs before any instrumentor runs. Each runs under
the launcher, so it never raises."""

from __future__ import annotations

import logging

from otel_resilience._setup.validation import checked_setting
from otel_resilience.core.config import (
    ATTEMPT_SPANS_CHOICES,
    ATTEMPT_SPANS_ENV,
    SETTINGS,
    STACKTRACES_CHOICES,
    STACKTRACES_ENV,
)

_logger = logging.getLogger("otel_resilience")


def settings_from_environment() -> None:
    """``resilience_settings``: ``OTEL_PYTHON_RESILIENCE_ATTEMPT_SPANS`` and ``OTEL_PYTHON_RESILIENCE_STACKTRACES``
    into `SETTINGS`. A wrong value is logged as one clear error and the default is kept (`setup()` raises
    `ValueError` for the same value)."""
    for name, variable, accepted in (
        ("attempt_spans", ATTEMPT_SPANS_ENV, ATTEMPT_SPANS_CHOICES),
        ("stacktraces", STACKTRACES_ENV, STACKTRACES_CHOICES),
    ):
        try:
            value = checked_setting(name, variable, None, accepted)
        except ValueError as exc:
            _logger.error("otel_resilience: %s; keeping %s=%s", exc, name, getattr(SETTINGS, name))
            continue
        if value is not None:
            setattr(SETTINGS, name, value)


def private_ids() -> None:
    """``resilience_ids``: the launcher's tracer provider gets ids that leave the app's global `random` alone
    (`otel_resilience._setup.ids.use_private_ids`). Without the SDK there is no provider to change."""
    try:
        from otel_resilience._setup.ids import use_private_ids
    except ImportError:
        return
    use_private_ids()
