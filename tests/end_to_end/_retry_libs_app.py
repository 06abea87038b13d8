"""An app that retries with backoff and stamina, for the end-to-end test under ``opentelemetry-instrument``.

It configures no OpenTelemetry of its own. Four stories, each under a span of the app's own: backoff recovers on the
third attempt; stamina recovers on the second; a stamina retry around a backoff retry that both give up (2 x 2 calls
to a dependency that stays down: depth 1 and 2); a stamina ``retry_context`` block in ``async for``. Waits are 1 ms.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import backoff
import stamina
from opentelemetry import trace

calls: Counter[str] = Counter()
WAIT = {"wait_initial": 0.001, "wait_max": 0.001, "wait_jitter": 0}


class DependencyDown(Exception):
    pass


def dependency(name: str, failures: int) -> str:
    calls[name] += 1
    if calls[name] <= failures:
        raise DependencyDown(f"{name} unavailable (call {calls[name]})")
    return f"{name} ok"


@backoff.on_exception(backoff.constant, DependencyDown, interval=0.001, jitter=None, max_tries=3)
def fetch_user() -> str:
    return dependency("user-directory", 2)


@stamina.retry(on=DependencyDown, attempts=3, **WAIT)
def fetch_order() -> str:
    return dependency("orders", 1)


@backoff.on_exception(backoff.constant, DependencyDown, interval=0.001, jitter=None, max_tries=2)
def read_stock() -> str:
    return dependency("stock", 100)


@stamina.retry(on=DependencyDown, attempts=2, **WAIT)
def reserve() -> str:
    return read_stock()


async def load_profile() -> str:
    async for attempt in stamina.retry_context(on=DependencyDown, attempts=3, **WAIT):
        with attempt:
            return dependency("profiles", 1)
    raise AssertionError("unreachable")


def main() -> None:
    tracer = trace.get_tracer("retry-libs-app")
    with tracer.start_as_current_span("backoff story"):
        print(fetch_user())
    with tracer.start_as_current_span("stamina story"):
        print(fetch_order())
    with tracer.start_as_current_span("nested story"):
        try:
            reserve()
        except DependencyDown as exc:
            print(f"gave up: {exc}")
    with tracer.start_as_current_span("async story"):
        print(asyncio.run(load_profile()))
    print(dict(calls))


if __name__ == "__main__":
    main()
