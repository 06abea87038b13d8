"""The seed program: a service that fails when the seeded global `random` says so, called through the retrier.

Its output depends on every number drawn from the global `random`, so any number our tracing drew would change it.
``SEED_MODE`` says how it is traced: ``plain`` (not at all, or by the launcher), ``setup`` (``otel_resilience.setup()``
creates the providers), ``app_provider`` (the app builds its own tracer provider with the id generator the docs
advise) or ``app_provider_default`` (the app's provider with the SDK's default id generator, for contrast).
"""

import os
import random
import sys

TARGET = "seed_retrier:Retrier.execute"


def configure(mode):
    if mode == "plain":
        return None
    import otel_resilience

    if mode.startswith("app_provider"):
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        from otel_resilience.console import ConsoleTreeSpanExporter

        if mode == "app_provider":
            provider = TracerProvider(id_generator=otel_resilience.PrivateRandomIdGenerator())
        else:
            provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(ConsoleTreeSpanExporter()))
        trace.set_tracer_provider(provider)
    return otel_resilience.setup(retry_targets=[TARGET])


def main():
    handle = configure(os.environ.get("SEED_MODE", "plain"))
    random.seed(42)
    from seed_retrier import Retrier

    def call_service(number):
        if random.random() < 0.6:
            raise TimeoutError(f"Request {number} timed out")
        return f"Request {number} succeeded"

    retrier = Retrier(max_retries=4)
    for number in range(1, 7):
        try:
            print(f"Result: {retrier.execute(call_service, number)}")
        except TimeoutError as exc:
            print(f"Final failure: {exc}")
    if handle is not None:
        handle.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
