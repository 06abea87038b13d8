"""Trace and span ids that leave the app's global `random` alone.

The SDK's default `RandomIdGenerator` draws every id from the global `random` module, so each span consumes the
sequence of an app that seeded it (`random.seed(42)`): a traced simulation, test or load generator then behaves
differently from an untraced one. `PrivateRandomIdGenerator` draws from a `random.Random` of its own, seeded from the
OS (and seeded again in a forked child, as the global one is, so two workers never share ids). It is what providers
created by `setup()` use, what the launcher's provider gets (`use_private_ids`, and the ``resilience_random`` id
generator entry point), and what an app that builds its own provider should pass.

The SDK's metrics draw from the global `random` too: a counter's default exemplar reservoir samples with
`random.randrange` once it has seen more measurements than it keeps, and a breaker's counters are recorded inside the
app's sampled spans. The meter providers `setup()` creates use `exemplar_views()`: every reservoir keeps the last
measurement of its bucket (what the SDK already does for explicit-bucket histograms), which draws nothing.

This module imports the SDK: import it only where the SDK is installed.
"""

from __future__ import annotations

import logging
import os
import random
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_PYTHON_ID_GENERATOR
from opentelemetry.sdk.metrics import AlignedHistogramBucketExemplarReservoir, ExemplarReservoir
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

from otel_resilience._environment import env

_logger = logging.getLogger("otel_resilience")

_SOURCE: Final = random.Random()  # seeded from os.urandom (or the time, where the OS has no random source)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_SOURCE.seed)

ENTRY_POINT_NAME: Final = "resilience_random"
"""Our ``opentelemetry_id_generator`` entry point: ``OTEL_PYTHON_ID_GENERATOR=resilience_random``."""
ADVICE: Final = (
    "build it with TracerProvider(id_generator=otel_resilience.PrivateRandomIdGenerator()), or set "
    f"OTEL_PYTHON_ID_GENERATOR={ENTRY_POINT_NAME} where the SDK configures it"
)
"""What to do about a provider whose ids come from the global `random` (said by the doctor and `setup()`)."""


class PrivateRandomIdGenerator(IdGenerator):
    """Random 128-bit trace ids and 64-bit span ids, as the SDK's default makes them, from a private OS-seeded source
    instead of the global `random` module."""

    def generate_span_id(self) -> int:
        span_id = _SOURCE.getrandbits(64)
        while span_id == trace.INVALID_SPAN_ID:
            span_id = _SOURCE.getrandbits(64)
        return span_id

    def generate_trace_id(self) -> int:
        trace_id = _SOURCE.getrandbits(128)
        while trace_id == trace.INVALID_TRACE_ID:
            trace_id = _SOURCE.getrandbits(128)
        return trace_id

    def is_trace_id_random(self) -> bool:
        return True


def _last_measurement_reservoir(**kwargs: Any) -> ExemplarReservoir:
    """An exemplar reservoir that keeps the last measurement per bucket: the explicit histogram's own `boundaries`
    when the SDK passes them, else one bucket. It never samples at random, so it never touches the global `random`."""
    return AlignedHistogramBucketExemplarReservoir(boundaries=kwargs.get("boundaries") or ())


def exemplar_views() -> list[View]:
    """The views `setup()` gives the meter providers it creates: every instrument as by default, with exemplar
    reservoirs that leave the app's global `random` alone (see the module docstring)."""
    return [View(instrument_name="*", exemplar_reservoir_factory=lambda aggregation: _last_measurement_reservoir)]


def draws_from_global_random(provider: object) -> bool:
    """Whether `provider` is an SDK tracer provider with the SDK's default id generator (exactly that class: a
    subclass or another generator is the app's choice)."""
    return type(getattr(provider, "id_generator", None)) is RandomIdGenerator


def use_private_ids(provider: Any = None) -> None:
    """The launcher's ``opentelemetry_pre_instrument`` hook ``resilience_ids``: it runs after the SDK configurator
    built the global tracer provider and before any instrumentor asks it for a tracer. When that provider has the
    SDK's default generator and ``OTEL_PYTHON_ID_GENERATOR`` was not set (the user chose nothing), its generator
    becomes a `PrivateRandomIdGenerator`: ids as random, the app's `random` untouched. `provider` defaults to the
    global one. Never raises."""
    try:
        provider = trace.get_tracer_provider() if provider is None else provider
        if not draws_from_global_random(provider):
            return
        if env(OTEL_PYTHON_ID_GENERATOR) is not None:
            _logger.debug("otel_resilience: %s is set; keeping the SDK's id generator", OTEL_PYTHON_ID_GENERATOR)
            return
        provider.id_generator = PrivateRandomIdGenerator()
    except Exception:
        _logger.warning("otel_resilience: could not give the tracer provider a private id generator", exc_info=True)


__all__ = [
    "ADVICE",
    "ENTRY_POINT_NAME",
    "PrivateRandomIdGenerator",
    "draws_from_global_random",
    "exemplar_views",
    "use_private_ids",
]
