"""Our code must never raise into the app. An error of ours is logged once per place it happened (with its traceback)
and swallowed; the app's call carries on exactly as it would without us.

The rule for who guards: **the core guards its own entry points.** Every method of an observation (`RetryOperation`,
`ProxiedAttempts`, `BreakerCall`, `HttpRequest` and its loops above the client, `LoopCall` and `ClientLoop`) and every
hook or wrapper the core hands to adapters (core/breaker.py's `admitted`, `refused`, `reported_transition`,
`failure_hook`; core/http.py's scope wrappers; core/http_loop.py's `end_client_loop`) swallows its own errors, so an
adapter calls into the core without a guard for it. An adapter guards its own work (reading its library's objects,
building arguments) in its hooks. Both use `never_raises`, or an inline ``try`` where a benchmark row showed the extra
frame.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

_logger = logging.getLogger("otel_resilience")
_reported: set[str] = set()
_reported_lock = threading.Lock()

F = TypeVar("F", bound=Callable[..., Any])


def report_internal_error(where: str) -> None:
    """Log the exception being handled, once for each `where`, and return: the caller then swallows it."""
    with _reported_lock:
        if where in _reported:
            return
        _reported.add(where)
    _logger.warning("otel_resilience: internal error in %s (swallowed; telemetry may be incomplete)", where, exc_info=True)


def never_raises(func: F) -> F:
    """Decorate a function of ours so that an exception in it is reported once and swallowed (it returns None)."""
    where = f"{func.__module__}.{func.__qualname__}"

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except Exception:
            report_internal_error(where)
            return None

    return cast(F, guarded)
