"""Settings shared by every instrumentor, from `setup()` arguments or the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

AttemptSpans = Literal["all", "on_retry", "none"]
Stacktraces = Literal["final", "all", "none"]

ATTEMPT_SPANS_ENV: Final = "OTEL_PYTHON_RESILIENCE_ATTEMPT_SPANS"
STACKTRACES_ENV: Final = "OTEL_PYTHON_RESILIENCE_STACKTRACES"
ATTEMPT_SPANS_CHOICES: Final = ("all", "on_retry", "none")
STACKTRACES_CHOICES: Final = ("final", "all", "none")


@dataclass
class Settings:
    """`attempt_spans`: ``all`` (a span per attempt), ``on_retry`` (no span for a first attempt that succeeds),
    ``none`` (attempts are events on the operation span). `stacktraces`: which failures record a full stacktrace:
    ``final`` (the operation's final failure only), ``all`` (every failed attempt too) or ``none``."""

    attempt_spans: AttemptSpans = "all"
    stacktraces: Stacktraces = "final"


def checked_choice(what: str, value: str, accepted: tuple[str, ...]) -> str:
    """Return `value` normalised, or raise a `ValueError` that says what was wrong and what is accepted."""
    normalised = value.strip().lower()
    if normalised not in accepted:
        raise ValueError(f"{what}: {value!r} is not accepted; use one of: {', '.join(accepted)}")
    return normalised


SETTINGS: Final = Settings()
"""The process-wide settings; `setup()` (or the launcher, from the environment) updates them in place."""
