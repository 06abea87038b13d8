"""An app that drives circuitbreaker, aiobreaker and purgatory through a full cycle each, for the end-to-end test.

It configures no OpenTelemetry of its own: it is run under ``opentelemetry-instrument``. Each breaker goes closed →
open (trip) → rejected → half_open probe fails → open → half_open probe succeeds → closed, its clock moved by hand
(never slept): circuitbreaker's ``monotonic``, purgatory's ``time``, aiobreaker's stored ``opened_at``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import aiobreaker
import circuitbreaker
from opentelemetry import trace
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain import model

FAILS = (True, True, False, "timeout", True, "timeout", False, False)


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


clock = Clock()
circuitbreaker.monotonic = clock
model.time = clock  # type: ignore[assignment]


class DependencyDown(Exception):
    pass


@circuitbreaker.circuit(failure_threshold=2, recovery_timeout=30, name="cb-payments")
def charge(fail: bool) -> str:
    if fail:
        raise DependencyDown("payments down")
    return "paid"


directory = aiobreaker.CircuitBreaker(fail_max=2, timeout_duration=timedelta(seconds=30), name="aio-directory")


@directory
async def lookup(fail: bool) -> str:
    if fail:
        raise DependencyDown("directory down")
    return "found"


@AsyncCircuitBreakerFactory(default_threshold=2, default_ttl=30)("pg-stock")
async def reserve(fail: bool) -> str:
    if fail:
        raise DependencyDown("stock down")
    return "reserved"


def pass_timeout() -> None:
    clock.now += 31
    directory._state_storage.opened_at = datetime.utcnow() - timedelta(seconds=31)


def cycle(call: Callable[[bool], Any]) -> None:
    for step in FAILS:
        if step == "timeout":
            pass_timeout()
            continue
        try:
            call(step)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001 - failures and refusals are what this app is about
            pass


async def async_cycle(call: Callable[[bool], Awaitable[Any]]) -> None:
    for step in FAILS:
        if step == "timeout":
            pass_timeout()
            continue
        try:
            await call(step)  # type: ignore[arg-type]
        except Exception:  # noqa: BLE001
            pass


async def async_part(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span("request aio-directory"):
        await async_cycle(lookup)
    with tracer.start_as_current_span("request pg-stock"):
        await async_cycle(reserve)


def main() -> None:
    tracer = trace.get_tracer("breakers-app")
    with tracer.start_as_current_span("request cb-payments"):
        cycle(charge)
    asyncio.run(async_part(tracer))


if __name__ == "__main__":
    main()
