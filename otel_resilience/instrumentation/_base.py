"""What every instrumentor shares: the version check that never raises, a Telemetry made once, and `Patches`
(`otel_resilience.patching`) that `uninstrument()` undoes exactly."""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any, ClassVar

from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from otel_resilience.core.telemetry import Telemetry
from otel_resilience.patching import Patches

_logger = logging.getLogger("otel_resilience")


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
        self.telemetry.on_live = self.patches.activate
        self.telemetry.may_record()  # with an SDK already there, the deferred patches are applied now

    def _uninstrument(self, **kwargs: Any) -> None:
        telemetry = getattr(self, "telemetry", None)
        if telemetry is None:
            return
        telemetry.disabled = True  # what outlives the patches (closures decorated meanwhile) records nothing more
        self.patches.restore()
        self.telemetry = None

    def _patch(self, telemetry: Telemetry) -> None:
        raise NotImplementedError
