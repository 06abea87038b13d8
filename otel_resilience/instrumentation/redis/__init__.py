"""OpenTelemetry instrumentation for the retries of `redis-py <https://github.com/redis/redis-py>`_: a command that
redis retried gets one operation span and one child span per attempt, with the wait redis's backoff chose and the error
each attempt hit. A command that succeeds at its first attempt costs no span of ours.

Usage::

    from otel_resilience.instrumentation.redis import RedisRetryInstrumentor

    RedisRetryInstrumentor().instrument()        # or otel_resilience.setup(), or opentelemetry-instrument

    client = redis.Redis(retry=Retry(ExponentialWithJitterBackoff(base=0.1, cap=2), 3))
    client.get("user:1")

Everything that retries in ``Retry.call_with_retry`` is covered: commands, pipelines and transactions of the sync and
asyncio clients, connects and health checks, cluster clients' transactions and node connections; also for clients
and Retry objects made before instrumenting. Operations and attempts are named by the
command (``GET``). Beside contrib's redis instrumentation (``opentelemetry-instrumentation-redis``), whose span per
command covers the whole retry loop, our spans hang under it (see ``docs/retry-libraries.md`` for why).
"""

from __future__ import annotations

from collections.abc import Collection

from otel_resilience.core import Telemetry
from otel_resilience.instrumentation._base import ResilienceInstrumentor
from otel_resilience.instrumentation.redis.package import _instruments


class RedisRetryInstrumentor(ResilienceInstrumentor):
    """Instruments redis-py's ``Retry.call_with_retry`` (sync and asyncio) and its backoffs' ``compute``."""

    library = "redis"
    _instruments: Collection[str] = _instruments

    def _patch(self, telemetry: Telemetry) -> None:
        from otel_resilience.instrumentation.redis._adapter import RedisAdapter

        RedisAdapter(telemetry).patch(self.patches)


__all__ = ["RedisRetryInstrumentor"]
