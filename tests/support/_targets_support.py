"""Fixtures shared by the configured-targets tests: fresh app modules, a fake clock, instrumenting with test providers."""

from __future__ import annotations

import gc
import importlib
import itertools
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from otel_resilience.core import retry as core_retry
from otel_resilience.targets import instrument_targets, uninstrument_targets
from tests.conftest import Otel

TEMPLATES = Path(__file__).resolve().parents[1] / "targets"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_numbers = itertools.count()


@dataclass
class AppModules:
    """Writes fresh copies of app modules under new names (never imported before), on ``sys.path``."""

    directory: Path
    names: list[str]

    def fresh(self, template: str = "_targets_app.py") -> str:
        """The name of a new, not yet imported module with the contents of `template` (a file in tests/targets/)."""
        name = f"targets_app_{next(_numbers)}"
        (self.directory / f"{name}.py").write_text((TEMPLATES / template).read_text())
        importlib.invalidate_caches()
        self.names.append(name)
        return name

    def imported(self, template: str = "_targets_app.py") -> ModuleType:
        return importlib.import_module(self.fresh(template))


@pytest.fixture
def apps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppModules]:
    monkeypatch.syspath_prepend(str(tmp_path))
    modules = AppModules(tmp_path, [])
    yield modules
    for name in modules.names:
        sys.modules.pop(name, None)


class Clock:
    """The core's clock, advanced only by the app's (fake) sleeps: measured delays come out exact."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000_000_000
        self.slept: list[float] = []

    def time_ns(self) -> int:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += round(seconds * 1e9)

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(core_retry, "time_ns", fake.time_ns)
    return fake


def use_clock(module: ModuleType, clock: Clock) -> ModuleType:
    """Point an app module's waits at the fake clock."""
    module.sleep = clock.sleep  # type: ignore[attr-defined]
    module.async_sleep = clock.async_sleep  # type: ignore[attr-defined]
    return module


Instrument = Callable[..., None]


@pytest.fixture
def targets(otel: Otel) -> Iterator[Instrument]:
    """``targets(retry=[...], breaker=[...])`` instruments with the test's providers; undone at teardown. Breakers
    earlier tests left for the garbage collector are collected first: the state gauge reports every live one."""
    gc.collect()

    def instrument(retry: Sequence[str] = (), breaker: Sequence[str] = ()) -> None:
        instrument_targets(retry, breaker, **otel.kwargs())

    yield instrument
    uninstrument_targets()


class Flaky:
    """Fails `failures` times with ConnectionError (a new exception object each time, kept), then returns `value`."""

    def __init__(self, failures: int, value: Any = "ok", error: type[BaseException] = ConnectionError) -> None:
        self.failures = failures
        self.value = value
        self.error = error
        self.calls = 0
        self.raised: list[BaseException] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            exc = self.error(f"down {self.calls}")
            self.raised.append(exc)
            raise exc
        return self.value


def by_name(otel: Otel, name: str) -> list[ReadableSpan]:
    return [s for s in otel.spans() if s.name == name]
