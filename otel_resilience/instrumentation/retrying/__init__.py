"""OpenTelemetry instrumentation for `retrying <https://github.com/groodt/retrying>`_: one span per retried call and one
child span per attempt, with the wait retrying chose and the error each attempt hit.

Usage::

    from otel_resilience.instrumentation.retrying import RetryingInstrumentor

    RetryingInstrumentor().instrument()          # or otel_resilience.setup(), or opentelemetry-instrument

    @retry(stop_max_attempt_number=3, wait_fixed=100)
    def fetch_user(user_id): ...

``@retry`` (also on functions decorated before instrumentation: retrying builds its ``Retrying`` at call time) and
``Retrying(...).call(fn, ...)`` are traced. A value rejected by ``retry_on_result`` is a failed attempt with
``error.type`` = ``rejected_result``. retrying adds ``wait_jitter_max`` jitter inline and hands the total to
``time.sleep``, which is never wrapped: with jitter, ``retry.delay`` is the measured gap between attempts; without,
it is the wait retrying's strategy chose (see ``docs/retry-libraries.md``).
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.retrying.package import _instruments


class RetryingInstrumentor(ResilienceInstrumentor):
    """Instruments retrying's ``Retrying.call``, which every form of retrying goes through."""

    library = "retrying"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.retrying._adapter import RetryingAdapter

        RetryingAdapter(telemetry).patch(self.patches)


__all__ = ["RetryingInstrumentor"]
