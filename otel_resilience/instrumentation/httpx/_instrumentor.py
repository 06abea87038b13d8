"""The instrumentor of one httpx flavour (httpx with httpcore, or the httpx2 fork with httpcore2): both are served by
one adapter given the flavour's modules, so each flavour's package only names them."""

from __future__ import annotations

from typing import ClassVar

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor


class HttpxFlavourInstrumentor(ResilienceInstrumentor):
    """A base, never instantiated (`BaseInstrumentor` keeps one instance per class): `library` names the flavour's
    httpx module, `httpcore` its httpcore module."""

    httpcore: ClassVar[str]

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.httpx._adapter import ClientModules, HttpxAdapter

        HttpxAdapter(telemetry, ClientModules.load(self.library, self.httpcore)).patch(self.patches)
