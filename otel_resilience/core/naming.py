"""Names for what is retried or guarded: ``module.qualname`` (`retry.name`) and the bare qualname (span names)."""

from __future__ import annotations

import sys
from typing import Any


def callable_names(fn: Any) -> tuple[str, str]:
    """(``module.qualname``, ``qualname``) of a callable: functions, methods, partials, callable objects."""
    target = getattr(fn, "func", fn) if not hasattr(fn, "__qualname__") else fn  # functools.partial
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None) or type(target).__module__
    return (f"{module}.{qualname}" if module else qualname), qualname


_ALWAYS_SKIPPED = ("wrapt", "otel_resilience", "contextlib", "functools")


def caller_names(*skip_modules: str) -> tuple[str, str]:
    """Names of the nearest calling function outside `skip_modules` (and outside wrapt and otel_resilience): forms
    with no function of their own (tenacity's ``for attempt in Retrying()``, ``stamina.retry_context``) take the name
    of the function they are written in."""
    skipped = _ALWAYS_SKIPPED + skip_modules
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(skipped):
        frame = frame.f_back
    code = frame.f_code
    qualname = getattr(code, "co_qualname", code.co_name)  # co_qualname is Python >= 3.11
    module = frame.f_globals.get("__name__", "")
    return (f"{module}.{qualname}" if module else qualname), qualname


def breaker_name(own: object, guarded: Any, breaker: Any) -> str:
    """`circuitbreaker.name`: the breaker's own name; else the first guarded function's ``module.qualname`` (taken
    once, for the breaker's lifetime); else, for a breaker seen before any guarded call (moved by hand), its class's."""
    if own:
        return str(own)
    if guarded is not None:
        return callable_names(guarded)[0]
    return callable_names(type(breaker))[0]
