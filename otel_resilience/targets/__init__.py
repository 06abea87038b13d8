"""Drop-in tracing of an app's own retry and circuit-breaker helpers, named in configuration, without editing them.

Usage::

    from otel_resilience.targets import instrument_targets

    instrument_targets(
        retry_targets=["myapp.net:Retrier.execute", "myapp.util:with_retries[decorator]"],
        breaker_targets=["myapp.cb:Breaker.call@state"],
    )

or ``otel_resilience.setup(retry_targets=[...], breaker_targets=[...])``, or under ``opentelemetry-instrument`` with
``OTEL_PYTHON_RESILIENCE_RETRY_TARGETS`` / ``OTEL_PYTHON_RESILIENCE_BREAKER_TARGETS`` (comma-separated): the
``opentelemetry_post_instrument`` entry point `instrument_from_environment` reads them, also when none of the
supported libraries is installed.

Syntax (checked at once; see docs/targets.md)::

    retry target    module:Qual.name[:argname][[style]]      style: [call] (the default) or [decorator]
    breaker target  module:Qual.name[:argname]@state_attr

A target whose module is already imported is patched now; otherwise through a wrapt post-import hook when the module
is imported, so nothing here imports the app. The named attribute is replaced by a patch (`Patches`, as every
instrumentor does); `uninstrument_targets` puts back the very objects that were there.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import wrapt
from opentelemetry.instrumentation.environment_variables import OTEL_PYTHON_DISABLED_INSTRUMENTATIONS

from otel_resilience.core import Telemetry, report_internal_error
from otel_resilience.patching import Patches, Wrapper
from otel_resilience.targets.breaker import breaker_wrapper
from otel_resilience.targets.retry import call_style_wrapper, decorator_style_wrapper
from otel_resilience.targets.spec import (
    BREAKER,
    RETRY,
    STYLE_DECORATOR,
    Resolved,
    TargetSpec,
    module_findable,
    parse_targets,
    resolve,
    split_targets,
)

RETRY_TARGETS_ENV: Final = "OTEL_PYTHON_RESILIENCE_RETRY_TARGETS"
BREAKER_TARGETS_ENV: Final = "OTEL_PYTHON_RESILIENCE_BREAKER_TARGETS"
ENTRY_POINT_NAME: Final = "resilience_targets"
"""The entry point's name: listing it in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` turns the environment path off."""
LIBRARY: Final = "targets"
"""Instrumentation scope ``otel_resilience.targets``."""

_logger = logging.getLogger("otel_resilience")


def _patch_for(telemetry: Telemetry, target: Resolved) -> tuple[Wrapper, Callable[[], object] | None]:
    """The wrapper of a target, and the check that lets its patch call straight through while nothing records."""
    if target.spec.kind == BREAKER:
        return breaker_wrapper(telemetry, target), telemetry.recording
    if target.spec.style == STYLE_DECORATOR:
        return decorator_style_wrapper(telemetry, target), None  # decorations must be seen before an SDK exists
    return call_style_wrapper(telemetry, target), telemetry.recording


class _Registration:
    """One configured target: patched, or waiting for its module to be imported."""

    __slots__ = ("spec", "telemetry", "patches", "cancelled")

    def __init__(self, spec: TargetSpec, telemetry: Telemetry) -> None:
        self.spec = spec
        self.telemetry = telemetry
        self.patches = Patches()
        self.cancelled = False

    def apply(self, target: Resolved) -> None:
        wrapper, enabled = _patch_for(self.telemetry, target)
        self.patches.wrap(target.owner, target.attr, wrapper, enabled=enabled)

    def on_import(self, module: types.ModuleType) -> None:
        """The post-import hook. It cannot raise (that would fail the app's import): a target the module lacks is
        logged, once, as an error."""
        try:
            with _STATE.lock:
                if self.cancelled:
                    return
                self.apply(resolve(self.spec, module))
        except ValueError as exc:
            _logger.error("otel_resilience: not tracing %s (module %s imported): %s", self.spec.text, module.__name__, exc)
        except Exception:
            report_internal_error("otel_resilience.targets: post-import hook")


@dataclass
class _Plan:
    spec: TargetSpec
    resolved: Resolved | None
    """Set when the module is already imported (patched now); None: patched by a post-import hook."""


class _State:
    """Every registration of this process, and the Telemetry they record through."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.registrations: dict[str, _Registration] = {}
        self.telemetry: Telemetry | None = None
        self.providers: tuple[Any, Any] = (None, None)
        self.retired: list[Telemetry] = []

    def prepare(self, specs: Iterable[TargetSpec], *, find_modules: bool) -> tuple[list[_Plan], list[str]]:
        """Check every target without patching anything: resolve those whose module is imported, and (with
        `find_modules`) look for the others' modules without importing them."""
        plans: list[_Plan] = []
        problems: list[str] = []
        seen: dict[str, TargetSpec] = {}
        for spec in specs:
            earlier = seen.get(spec.key) or self._registered(spec.key)
            if earlier is not None:
                if earlier != spec:
                    problems.append(f"{spec.kind} target {spec.text!r}: {spec.key} is already a target ({earlier.text!r})")
                continue
            seen[spec.key] = spec
            module = sys.modules.get(spec.module)
            try:
                if module is not None:
                    plans.append(_Plan(spec, resolve(spec, module)))
                    continue
                if find_modules and not module_findable(spec.module):
                    raise ValueError(f"{spec.kind} target {spec.text!r}: module {spec.module!r} not found")
                plans.append(_Plan(spec, None))
            except ValueError as exc:
                problems.append(str(exc))
        return plans, problems

    def _registered(self, key: str) -> TargetSpec | None:
        registration = self.registrations.get(key)
        return registration.spec if registration is not None else None

    def commit(self, plans: list[_Plan], tracer_provider: Any, meter_provider: Any) -> None:
        if not plans:
            return
        telemetry = self._telemetry(tracer_provider, meter_provider)
        for plan in plans:
            registration = _Registration(plan.spec, telemetry)
            self.registrations[plan.spec.key] = registration
            if plan.resolved is not None:
                registration.apply(plan.resolved)
            else:
                wrapt.register_post_import_hook(registration.on_import, plan.spec.module)

    def _telemetry(self, tracer_provider: Any, meter_provider: Any) -> Telemetry:
        """One Telemetry per pair of providers (its instruments and gauge are made once)."""
        if self.telemetry is None or self.providers[0] is not tracer_provider or self.providers[1] is not meter_provider:
            if self.telemetry is not None:
                self.retired.append(self.telemetry)
            self.telemetry = Telemetry(LIBRARY, tracer_provider, meter_provider)
            self.providers = (tracer_provider, meter_provider)
        return self.telemetry

    def clear(self) -> None:
        """Undo every patch, cancel pending hooks, and switch off whatever we cannot take back (functions decorated
        while instrumented, references the app took to a patched function): they pass straight through."""
        for registration in self.registrations.values():
            registration.cancelled = True
            registration.patches.restore()
            registration.telemetry.disabled = True
        for telemetry in self.retired:
            telemetry.disabled = True
        self.registrations.clear()
        self.retired.clear()
        self.telemetry = None
        self.providers = (None, None)


_STATE: Final = _State()


def _problems_message(header: str, problems: list[str]) -> str:
    lines = "\n".join(f"  - {problem}" for problem in problems)
    return f"{header}:\n{lines}"


def _parse(retry_targets: Iterable[Any] | str, breaker_targets: Iterable[Any] | str) -> tuple[list[TargetSpec], list[str]]:
    retry_specs, problems = parse_targets(RETRY, retry_targets)
    breaker_specs, breaker_problems = parse_targets(BREAKER, breaker_targets)
    return retry_specs + breaker_specs, problems + breaker_problems


def instrument_targets(
    retry_targets: Iterable[str] | str = (),
    breaker_targets: Iterable[str] | str = (),
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> None:
    """Trace the named helpers. Raises `ValueError` (listing every problem, with the expected format) for a
    malformed target, a module that cannot be found, an attribute that is missing or not callable, an unknown style
    or argument; nothing is patched then. A string is read as a comma-separated list. Naming a target again with the
    same text does nothing; with another text, it is a `ValueError` (call `uninstrument_targets` first)."""
    specs, problems = _parse(retry_targets, breaker_targets)
    with _STATE.lock:
        plans, more = _STATE.prepare(specs, find_modules=True)
        problems += more
        if problems:
            raise ValueError(_problems_message("otel_resilience: bad target configuration, nothing patched", problems))
        _STATE.commit(plans, tracer_provider, meter_provider)


def uninstrument_targets() -> None:
    """Put back every original exactly, and cancel the effect of post-import hooks not yet fired."""
    with _STATE.lock:
        _STATE.clear()


def _disabled_by_environment() -> bool:
    disabled = {name.strip() for name in os.environ.get(OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, "").split(",")}
    return ENTRY_POINT_NAME in disabled or "*" in disabled


def instrument_from_environment() -> None:
    """The ``opentelemetry_post_instrument`` entry point: trace the targets named in ``OTEL_PYTHON_RESILIENCE_*``.

    Never raises (it runs under the launcher): bad targets are reported in one error log line and skipped, the good
    ones are patched. Modules not imported yet are not looked for (under the launcher the app's directory may not be
    on the import path yet); a target whose module is imported later and lacks it is logged then."""
    try:
        if _disabled_by_environment():
            _logger.debug("otel_resilience: %s disabled by %s", ENTRY_POINT_NAME, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS)
            return
        retry_targets = split_targets(os.environ.get(RETRY_TARGETS_ENV, ""))
        breaker_targets = split_targets(os.environ.get(BREAKER_TARGETS_ENV, ""))
        if not retry_targets and not breaker_targets:
            return
        specs, problems = _parse(retry_targets, breaker_targets)
        with _STATE.lock:
            plans, more = _STATE.prepare(specs, find_modules=False)
            problems += more
            _STATE.commit(plans, None, None)
        if problems:
            _logger.error(
                _problems_message(
                    f"otel_resilience: ignoring bad targets in {RETRY_TARGETS_ENV}/{BREAKER_TARGETS_ENV} "
                    "(the others are traced)",
                    problems,
                )
            )
    except Exception:
        report_internal_error("otel_resilience.targets.instrument_from_environment")


__all__ = [
    "BREAKER_TARGETS_ENV",
    "RETRY_TARGETS_ENV",
    "instrument_from_environment",
    "instrument_targets",
    "uninstrument_targets",
]
