"""Reading the environment: the one place that parses ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``.

A leaf module (it imports nothing of ours), so `setup()`, the drop-in targets' launcher hook and the doctor all read
the variable the same way the launcher does: comma-separated entry-point names, blanks ignored, ``*`` for all.
"""

from __future__ import annotations

import os
from typing import Final

from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_DISABLED_INSTRUMENTATIONS

ALL: Final = "*"
"""The launcher's wildcard: every instrumentation is switched off."""


def env(name: str) -> str | None:
    """The variable's value stripped, or None when it is unset or blank."""
    value = os.environ.get(name, "").strip()
    return value or None


def disabled_instrumentations() -> frozenset[str]:
    """The entry-point names ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` lists (``*`` stands for all)."""
    return frozenset(n.strip() for n in (env(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS) or "").split(",") if n.strip())


def is_disabled(entry_point: str, disabled: frozenset[str] | None = None) -> bool:
    """Whether ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (or `disabled`, read from it once) turns `entry_point` off."""
    names = disabled_instrumentations() if disabled is None else disabled
    return ALL in names or entry_point in names


__all__ = ["ALL", "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "disabled_instrumentations", "env", "is_disabled"]
