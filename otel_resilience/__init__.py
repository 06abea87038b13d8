"""otel_resilience: retries and circuit breakers, visible in OpenTelemetry traces.

    import otel_resilience

    handle = otel_resilience.setup()     # export as configured by OTEL_* (default OTLP), instrument what is installed
    ...
    handle.shutdown()                    # bounded; also done at interpreter exit

or, with no code change: ``opentelemetry-instrument python app.py``. See the README for the three ways in.

``otel_resilience.breakers()`` is a health snapshot of every circuit breaker the process has used (name, library,
state, failure count, last transition time), e.g. for a health endpoint (``examples/health_endpoint.py``).
"""

from otel_resilience._setup import Handle, setup
from otel_resilience.core.registry import breakers
from otel_resilience.version import __version__

__all__ = ["Handle", "__version__", "breakers", "setup"]
