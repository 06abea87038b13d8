"""OpenTelemetry instrumentation for `backoff <https://github.com/litl/backoff>`_: one span per retried call and one
child span per attempt, with the wait backoff chose (jitter included) and the error each attempt hit.

Usage::

    from otel_resilience.instrumentation.backoff import BackoffInstrumentor

    BackoffInstrumentor().instrument()          # or otel_resilience.setup(), or opentelemetry-instrument

    @backoff.on_exception(backoff.expo, ConnectionError, max_tries=3)
    def fetch_user(user_id): ...

``@backoff.on_exception`` and ``@backoff.on_predicate`` are traced, on functions and ``async def``, with any wait
generator, ``max_tries``, ``max_time``, ``giveup`` and jitter. A value rejected by ``on_predicate`` is a failed attempt
with ``error.type`` = ``rejected_result``. The app's ``on_success``/``on_backoff``/``on_giveup`` handlers run exactly as
before (no handler of ours is added).

backoff builds its retry loop when a function is decorated. Functions decorated after ``instrument()`` (all of them
under ``opentelemetry-instrument``, which instruments before the app is imported) are traced fully. Functions decorated
before are traced from backoff's call-time hooks, with two limits: a call that ends with an exception the decorator does
not catch is not recorded, and attempt spans are not current while the attempt runs (see ``docs/retry-libraries.md``).
Functions decorated while instrumented keep a thin layer after ``uninstrument()`` that runs backoff's own closure.
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.backoff.package import _instruments


class BackoffInstrumentor(ResilienceInstrumentor):
    """Instruments backoff's ``on_exception`` and ``on_predicate`` decorators, sync and async."""

    library = "backoff"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.backoff._adapter import BackoffAdapter

        BackoffAdapter(telemetry).patch(self.patches)


__all__ = ["BackoffInstrumentor"]
