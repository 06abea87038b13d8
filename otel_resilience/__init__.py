"""otel_resilience: retries and circuit breakers, visible in OpenTelemetry traces.

    import otel_resilience

    handle = otel_resilience.setup()     # export as configured by OTEL_* (default OTLP), instrument what is installed
    ...
    handle.shutdown()                    # bounded; also done at interpreter exit

or, with no code change: ``opentelemetry-instrument python app.py``. See the README for the three ways in.

``otel_resilience.breakers()`` is a health snapshot of every circuit breaker the process has used (name, library,
state, failure count, last transition time), e.g. for a health endpoint (``examples/health_endpoint.py``).
``otel_resilience.PrivateRandomIdGenerator`` is the id generator to give a tracer provider the app builds itself, so
that span ids never come from the app's global `random` (it needs the SDK, so it is imported when first used).
"""

from typing import Any

from otel_resilience._setup import Handle, setup
from otel_resilience.core.registry import breakers
from otel_resilience.version import __version__


def __getattr__(name: str) -> Any:
    if name == "PrivateRandomIdGenerator":
        from otel_resilience._setup.ids import PrivateRandomIdGenerator

        return PrivateRandomIdGenerator
    raise AttributeError(f"module 'otel_resilience' has no attribute {name!r}")


__all__ = ["Handle", "__version__", "breakers", "setup"]  # PrivateRandomIdGenerator is lazy: it needs the SDK
