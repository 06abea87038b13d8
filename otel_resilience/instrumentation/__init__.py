"""One instrumentation package per library, each a `BaseInstrumentor` and its own `opentelemetry_instrumentor`
entry point (named ``resilience_{library}`` so it cannot collide with contrib's ``requests``, ``urllib3``, ``httpx``).

`INSTRUMENTORS` maps those entry-point names to the instrumentor classes; `setup()` uses it to instrument what is
installed, and `OTEL_PYTHON_DISABLED_INSTRUMENTATIONS` takes the same names.
"""

from __future__ import annotations

from typing import Final

INSTRUMENTORS: Final = {
    "resilience_tenacity": "otel_resilience.instrumentation.tenacity:TenacityInstrumentor",
    "resilience_pybreaker": "otel_resilience.instrumentation.pybreaker:PyBreakerInstrumentor",
    "resilience_backoff": "otel_resilience.instrumentation.backoff:BackoffInstrumentor",
    "resilience_stamina": "otel_resilience.instrumentation.stamina:StaminaInstrumentor",
    "resilience_retrying": "otel_resilience.instrumentation.retrying:RetryingInstrumentor",
    "resilience_circuitbreaker": "otel_resilience.instrumentation.circuitbreaker:CircuitBreakerInstrumentor",
    "resilience_aiobreaker": "otel_resilience.instrumentation.aiobreaker:AioBreakerInstrumentor",
    "resilience_purgatory": "otel_resilience.instrumentation.purgatory:PurgatoryInstrumentor",
    "resilience_urllib3": "otel_resilience.instrumentation.urllib3:Urllib3RetryInstrumentor",
    "resilience_httpx": "otel_resilience.instrumentation.httpx:HttpxRetryInstrumentor",
    "resilience_httpx2": "otel_resilience.instrumentation.httpx2:Httpx2RetryInstrumentor",
    "resilience_aiohttp_retry": "otel_resilience.instrumentation.aiohttp_retry:AiohttpRetryInstrumentor",
    "resilience_google_api_core": "otel_resilience.instrumentation.google_api_core:GoogleApiCoreInstrumentor",
    "resilience_redis": "otel_resilience.instrumentation.redis:RedisRetryInstrumentor",
    "resilience_botocore": "otel_resilience.instrumentation.botocore:BotocoreRetryInstrumentor",
    "resilience_aiobotocore": "otel_resilience.instrumentation.aiobotocore:AiobotocoreRetryInstrumentor",
    "resilience_openai": "otel_resilience.instrumentation.openai:OpenAIRetryInstrumentor",
    "resilience_anthropic": "otel_resilience.instrumentation.anthropic:AnthropicRetryInstrumentor",
    "resilience_httpx_retries": "otel_resilience.instrumentation.httpx_retries:HttpxRetriesInstrumentor",
}
