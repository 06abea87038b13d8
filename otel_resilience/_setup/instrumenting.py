"""Switching on the instrumentors and the drop-in targets a `Plan` names."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import Any

from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_resilience._setup.validation import Plan
from otel_resilience.instrumentation import INSTRUMENTORS

_logger = logging.getLogger("otel_resilience")


def load_instrumentor(entry_point_name: str) -> type[BaseInstrumentor] | None:
    """The instrumentor class named by `entry_point_name`, or None when its library (or its module, in an
    installation that lacks it) cannot be imported. Never raises: a broken instrumentor is logged and skipped."""
    module_name, _, attribute = INSTRUMENTORS[entry_point_name].partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)  # type: ignore[no-any-return]
    except ModuleNotFoundError as exc:
        _logger.debug("otel_resilience: skipping %s: %s", entry_point_name, exc)
    except Exception:
        _logger.warning("otel_resilience: cannot load %s; skipping it", entry_point_name, exc_info=True)
    return None


def instrument(names: Sequence[str], kwargs: dict[str, Any]) -> list[tuple[str, BaseInstrumentor]]:
    """Switch on each named instrumentor whose library is installed in a supported version; returns those this call
    switched on. One that the launcher already switched on stays as it is."""
    done: list[tuple[str, BaseInstrumentor]] = []
    for name in names:
        cls = load_instrumentor(name)
        if cls is None:
            continue
        instrumentor = cls()
        if instrumentor.is_instrumented_by_opentelemetry:
            continue  # the launcher (or the app) switched it on already: it stays theirs
        conflict = get_dependency_conflicts(instrumentor.instrumentation_dependencies())
        if conflict is not None:
            log = _logger.warning if conflict.found else _logger.debug
            log("otel_resilience: not instrumenting %s: %s", name, conflict)
            continue
        try:
            instrumentor.instrument(skip_dep_check=True, **kwargs)
        except Exception:
            _logger.warning("otel_resilience: instrumenting %s failed; skipping it", name, exc_info=True)
            continue
        done.append((name, instrumentor))
    return done


def instrument_targets(plan: Plan, kwargs: dict[str, Any]) -> bool:
    """Patch the app's own helpers named in `retry_targets`/`breaker_targets` (or the environment): True when there
    were any. Raises `ValueError`, patching nothing, for a target that is malformed or cannot be found."""
    if not plan.retry_targets and not plan.breaker_targets:
        return False
    from otel_resilience.targets import instrument_targets as patch_targets

    patch_targets(plan.retry_targets, plan.breaker_targets, **kwargs)
    return True
