"""What every instrumentor shares: the version check that never raises, a Telemetry made once, exact unpatching."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any, ClassVar

import wrapt
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_resilience.core.telemetry import Telemetry

_logger = logging.getLogger("otel_resilience")

Wrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]


class Patches:
    """wrapt patches that can be undone exactly: `restore()` puts back the very object that was there before
    (descriptor included), and only where our wrapper is still the outermost layer. Where somebody wrapped on top
    of us, we leave their layer alone and our wrapper stays, switched off (its Telemetry no longer records)."""

    def __init__(self) -> None:
        self._applied: list[tuple[Any, str, Any, Any]] = []

    def wrap(self, owner: Any, name: str, wrapper: Wrapper) -> None:
        original = vars(owner)[name]
        wrapt.wrap_function_wrapper(owner, name, wrapper)
        self._applied.append((owner, name, original, vars(owner)[name]))

    def restore(self) -> bool:
        """Undo every patch; False when some wrapper could not be removed because another layer sits on it."""
        clean = True
        for owner, name, original, ours in reversed(self._applied):
            if vars(owner).get(name) is ours:
                setattr(owner, name, original)
            else:
                clean = False
                _logger.warning("otel_resilience: %s.%s was wrapped again after us; leaving it", owner, name)
        self._applied.clear()
        return clean


class ResilienceInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Base of our instrumentors. Subclasses set `library` and `_instruments` (in their ``package.py``) and
    implement `_patch`, using `self.patches` so that `uninstrument()` restores every original exactly.

    The launcher checks `instruments-any` once for the whole distribution and then calls every entry point with the
    check skipped, so `_instrument` checks its own library and version and returns quietly when unmet."""

    library: ClassVar[str]
    _instruments: ClassVar[Collection[str]]

    def instrumentation_dependencies(self) -> Collection[str]:
        return self._instruments

    def _instrument(self, **kwargs: Any) -> None:
        conflict = get_dependency_conflicts(self._instruments)
        if conflict is not None:
            _logger.debug("otel_resilience: not instrumenting %s: %s", self.library, conflict)
            self.telemetry = None
            return
        self.telemetry = Telemetry(self.library, kwargs.get("tracer_provider"), kwargs.get("meter_provider"))
        self.patches = Patches()
        self._patch(self.telemetry)

    def _uninstrument(self, **kwargs: Any) -> None:
        telemetry = getattr(self, "telemetry", None)
        if telemetry is None:
            return
        if not self.patches.restore():
            telemetry.disabled = True
        self.telemetry = None

    def _patch(self, telemetry: Telemetry) -> None:
        raise NotImplementedError
