"""Fake time for google-api-core's retry loops: its clock (``time.monotonic``) moves only when an attempt costs time
or the library sleeps; its sleeps (``time.sleep``, ``asyncio.sleep``) are recorded, never slept; its jitter
(``random.uniform`` in ``exponential_sleep_generator``) draws from a generator of the test's own, seeded the same for
the runs that are compared (the SDK draws span ids from the global ``random``)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from unittest import mock

from google.api_core.retry import retry_base, retry_streaming, retry_streaming_async, retry_unary, retry_unary_async


class FakeTime:
    def __init__(self, seed: int = 0) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.random = random.Random(seed)

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    @contextmanager
    def installed(self) -> Iterator[FakeTime]:
        fake_time = SimpleNamespace(monotonic=self.monotonic, sleep=self.sleep)
        fake_asyncio = SimpleNamespace(sleep=self.async_sleep)
        with (
            mock.patch.object(retry_base, "time", fake_time),
            mock.patch.object(retry_base, "random", self.random),
            mock.patch.object(retry_unary, "time", fake_time),
            mock.patch.object(retry_streaming, "time", fake_time),
            mock.patch.object(retry_unary_async, "time", fake_time),
            mock.patch.object(retry_unary_async, "asyncio", fake_asyncio),
            mock.patch.object(retry_streaming_async, "time", fake_time),
            mock.patch.object(retry_streaming_async, "asyncio", fake_asyncio),
        ):
            yield self
