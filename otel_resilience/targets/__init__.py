"""Drop-in tracing of an app's own retry and circuit-breaker helpers, named in configuration, without editing them:
many apps retry with code of their own, which no library instrumentor sees. `instrument_targets` (also reached through
``otel_resilience.setup(retry_targets=..., breaker_targets=...)``, and `instrument_from_environment` under
``opentelemetry-instrument``) checks the targets at once, patches those already defined and the others the moment
their code is defined, importing nothing of the app; `uninstrument_targets` puts back the very objects that were
there. Syntax, examples and what is recorded: docs/targets.md."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from otel_resilience._environment import OTEL_PYTHON_DISABLED_INSTRUMENTATIONS, is_disabled
from otel_resilience.core import Telemetry, never_raises, report_internal_error
from otel_resilience.patching import Patches, Wrapper
from otel_resilience.targets._definitions import (
    MAIN,
    ClassHook,
    DefiningFinder,
    main_names,
    module_names,
    running_as_main,
    script_path,
    set_on_defined,
)
from otel_resilience.targets._status import TargetStatus, static_status, target_statuses
from otel_resilience.targets.breaker import breaker_wrapper
from otel_resilience.targets.retry import CallTarget, DecoratorTarget
from otel_resilience.targets.spec import (
    BREAKER,
    RETRY,
    STYLE_DECORATOR,
    Kind,
    Missing,
    Resolved,
    TargetSpec,
    module_findable,
    parse_targets,
    resolve,
    resolve_on,
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
        return DecoratorTarget(telemetry, target), None  # decorations must be seen before an SDK exists
    return CallTarget(telemetry, target), telemetry.recording


class _Registration:
    """One configured target: waiting for its code to be defined, patched (once per class or module defining it),
    or given up on with a logged problem."""

    __slots__ = ("spec", "telemetry", "patches", "cancelled", "places", "problem")

    def __init__(self, spec: TargetSpec, telemetry: Telemetry) -> None:
        self.spec = spec
        self.telemetry = telemetry
        self.patches = Patches()
        self.cancelled = False
        self.places: list[tuple[Any, str]] = []
        """Where it is patched: (module or class, attribute)."""
        self.problem: str | None = None
        """Why it cannot be traced, once logged."""

    @property
    def pending(self) -> bool:
        return not self.places and self.problem is None and not self.cancelled

    def apply(self, target: Resolved) -> None:
        if any(owner is target.owner and attr == target.attr for owner, attr in self.places):
            return  # seen defined, then again when its module finished executing
        wrapper, enabled = _patch_for(self.telemetry, target)
        self.patches.wrap(target.owner, target.attr, wrapper, enabled=enabled)
        self.places.append((target.owner, target.attr))

    def give_up(self, why: str, when: str) -> None:
        """Log, once, why this target is not traced (it cannot raise any more: the app is running)."""
        if self.problem is None:
            self.problem = why
            _logger.error("otel_resilience: not tracing %s (%s): %s", self.spec.text, when, why)


@dataclass
class _TargetPlan:
    spec: TargetSpec
    resolved: Resolved | None
    """Set when the target is defined already (patched now); None: patched when it is defined."""


def _imported(name: str) -> types.ModuleType | None:
    """The module `name` if it is imported, the running script included (``app`` for ``python app.py``)."""
    module = sys.modules.get(name)
    if module is None and name in main_names():
        module = sys.modules.get(MAIN)
    return module


def _still_executing(module: types.ModuleType) -> bool:
    """A module whose top-level code may still define the target: the program's ``__main__``, or a module being
    imported."""
    if module is sys.modules.get(MAIN):
        return True
    return bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


class _State:
    """Every registration of this process, the Telemetry they record through, and the watches that see pending
    targets defined."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.registrations: dict[str, _Registration] = {}
        self.telemetry: Telemetry | None = None
        self.providers: tuple[Any, Any] = (None, None)
        self.retired: list[Telemetry] = []
        self.classes: dict[str, list[_Registration]] = {}
        """Pending targets by the qualified name of the class that defines them (or that they wrongly name)."""
        self.modules: dict[str, dict[str, str]] = {}
        """Modules a pending target waits for: its module-level functions' names and target keys."""
        self.class_hook = ClassHook()
        self.finder = DefiningFinder(self.awaited_functions, self.on_executed)
        self.exit_report_registered = False

    def awaited_functions(self, module_name: str) -> dict[str, str] | None:
        """What `DefiningFinder` watches for in a module being imported (None: the module is not awaited)."""
        modules = self.modules
        functions = modules.get(module_name)
        if functions is None and MAIN in modules and running_as_main(module_name):
            return modules[MAIN]
        return functions

    def prepare(self, specs: Iterable[TargetSpec], *, find_modules: bool) -> tuple[list[_TargetPlan], list[str]]:
        """Check every target without patching anything: resolve those already defined, and (with `find_modules`)
        look for the others' modules without importing them."""
        plans: list[_TargetPlan] = []
        problems: list[str] = []
        seen: dict[str, TargetSpec] = {}
        for spec in specs:
            earlier = seen.get(spec.key) or self._registered(spec.key)
            if earlier is not None:
                if earlier != spec:
                    problems.append(f"{spec.kind} target {spec.text!r}: {spec.key} is already a target ({earlier.text!r})")
                continue
            seen[spec.key] = spec
            module = _imported(spec.module)
            try:
                if module is not None:
                    try:
                        plans.append(_TargetPlan(spec, resolve(spec, module)))
                    except Missing:
                        if not _still_executing(module):
                            raise
                        plans.append(_TargetPlan(spec, None))  # defined later by the code now running
                    continue
                if find_modules and not module_findable(spec.module):
                    raise ValueError(f"{spec.kind} target {spec.text!r}: module {spec.module!r} not found")
                plans.append(_TargetPlan(spec, None))
            except ValueError as exc:
                problems.append(str(exc))
        return plans, problems

    def _registered(self, key: str) -> TargetSpec | None:
        registration = self.registrations.get(key)
        return registration.spec if registration is not None else None

    def commit(self, plans: list[_TargetPlan], tracer_provider: Any, meter_provider: Any) -> None:
        if not plans:
            return
        telemetry = self._telemetry(tracer_provider, meter_provider)
        for plan in plans:
            registration = _Registration(plan.spec, telemetry)
            self.registrations[plan.spec.key] = registration
            if plan.resolved is not None:
                registration.apply(plan.resolved)
        self.watch()
        if not self.exit_report_registered:
            self.exit_report_registered = True
            atexit.register(_report_never_found)

    def watch(self) -> None:
        """Watch class statements and module imports exactly while some target waits for them."""
        classes: dict[str, list[_Registration]] = {}
        modules: dict[str, dict[str, str]] = {}
        for key, registration in self.registrations.items():
            if not registration.pending:
                continue
            spec = registration.spec
            owner_path, _, name = spec.qualname.rpartition(".")
            classes.setdefault(owner_path or name, []).append(registration)
            functions = modules.setdefault(spec.module, {})
            if not owner_path:
                functions[name] = key
        self.classes, self.modules = classes, modules  # swapped whole: the hooks read them without the lock
        if self.classes:
            self.class_hook.install(self.on_class, self.classes)
        else:
            self.class_hook.remove()
        if self.modules:
            self.finder.install()
            set_on_defined(self.on_defined)
        else:
            self.finder.remove()
            set_on_defined(None)

    @never_raises
    def on_class(self, cls: Any) -> None:
        """A class statement just ran (`ClassHook`): patch the pending targets it defines."""
        waiting = self.classes.get(cls.__qualname__)
        if not waiting:
            return
        module_name = getattr(cls, "__module__", None)
        if not isinstance(module_name, str):
            return
        names = module_names(module_name)
        with self.lock:
            for registration in waiting:
                spec = registration.spec
                if not registration.pending or spec.module not in names:
                    continue
                where = f"{spec.module}.{cls.__qualname__}"
                defined = f"class {where} defined"
                if spec.qualname == cls.__qualname__:
                    registration.give_up(
                        f"{where} is a class: name the function or method that does the work (module:Class.method)",
                        defined,
                    )
                    continue
                try:
                    registration.apply(resolve_on(spec, cls, where))
                except ValueError as exc:
                    registration.give_up(str(exc), defined)
            self.watch()

    def on_defined(self, key: str, module_name: str) -> None:
        """A pending target's ``def`` just ran in its module (`DefiningFinder`)."""
        with self.lock:
            registration = self.registrations.get(key)
            module = sys.modules.get(module_name)
            if registration is None or not registration.pending or module is None:
                return
            try:
                registration.apply(resolve(registration.spec, module))
            except ValueError as exc:
                registration.give_up(str(exc), f"function defined in {module_name}")
            self.watch()

    @never_raises
    def on_executed(self, module: types.ModuleType) -> None:
        """A module a target waits for finished executing: patch what is there (a name bound otherwise than by
        ``def`` or ``class``); what is still missing now never will be."""
        with self.lock:
            for registration in list(self.registrations.values()):
                if registration.spec.module != module.__name__ or registration.cancelled:
                    continue
                try:
                    registration.apply(resolve(registration.spec, module))
                except ValueError as exc:
                    if not registration.places:
                        registration.give_up(str(exc), f"module {module.__name__} imported")
            self.watch()

    def _telemetry(self, tracer_provider: Any, meter_provider: Any) -> Telemetry:
        """One Telemetry per pair of providers (its instruments and gauge are made once)."""
        if self.telemetry is None or self.providers[0] is not tracer_provider or self.providers[1] is not meter_provider:
            if self.telemetry is not None:
                self.retired.append(self.telemetry)
            self.telemetry = Telemetry(LIBRARY, tracer_provider, meter_provider)
            self.providers = (tracer_provider, meter_provider)
        return self.telemetry

    def clear(self) -> None:
        """Undo every patch, stop watching, and switch off whatever we cannot take back (functions decorated while
        instrumented, references the app took to a patched function): they pass straight through."""
        for registration in self.registrations.values():
            registration.cancelled = True
            registration.patches.restore()
            registration.telemetry.disabled = True
        for telemetry in self.retired:
            telemetry.disabled = True
        self.registrations.clear()
        self.retired.clear()
        self.watch()
        self.telemetry = None
        self.providers = (None, None)

    def never_found(self) -> list[_Registration]:
        with self.lock:
            return [r for r in self.registrations.values() if r.pending]


_STATE: Final = _State()


def _never_found_advice(spec: TargetSpec) -> str:
    """Why a target was never seen defined, and what to do about it."""
    main = sys.modules.get(MAIN)
    script = script_path()
    aliases = sorted(main_names() - {MAIN})
    module = _imported(spec.module)
    owner_path, _, name = spec.qualname.rpartition(".")
    if module is None:
        hint = f"module {spec.module} was never imported"
        if script:
            hint += f"; the program ran {script} as {MAIN}: name its code {MAIN}:{spec.qualname}"
            hint += "".join(f" or {alias}:{spec.qualname}" for alias in aliases)
        return hint + "; or check the module name (as you would import it)"
    if module is main and not owner_path and name in vars(module) and main.__spec__ is None:  # type: ignore[union-attr]
        stem = aliases[0] if aliases else "app"
        return (
            f"{name} is a module-level function of the script, which Python compiles and runs before any hook can "
            f"patch a function of it; run the script as a module (python -m {stem}), or move {name} into a module "
            "the script imports, or make it a method of a class (classes of a script are patched when defined)"
        )
    return f"{spec.module} never defined {spec.qualname}: check the qualified name (Class.method or function)"


def _report_never_found() -> None:
    """At exit: one warning per target that was never found, saying what to do (not after ``python -m
    otel_resilience``, which runs none of the app)."""
    try:
        if "otel_resilience.__main__" in main_names():
            return
        for registration in _STATE.never_found():
            _logger.warning(
                "otel_resilience: %s target %s was never found, so it was not traced: %s",
                registration.spec.kind,
                registration.spec.text,
                _never_found_advice(registration.spec),
            )
    except Exception:
        report_internal_error("otel_resilience.targets: exit report")


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
    """Put back every original exactly, and stop watching for targets not defined yet."""
    with _STATE.lock:
        _STATE.clear()


def instrument_from_environment() -> None:
    """The ``opentelemetry_post_instrument`` entry point: trace the targets named in ``OTEL_PYTHON_RESILIENCE_*``.

    Never raises (it runs under the launcher): bad targets are reported in one error log line and skipped, the good
    ones are patched. Modules not imported yet are not looked for (under the launcher the app's directory may not be
    on the import path yet); a target whose module is imported later and lacks it is logged then, and one never
    found at all, at exit."""
    try:
        if is_disabled(ENTRY_POINT_NAME):
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


def _where(owner: Any) -> str:
    if isinstance(owner, types.ModuleType):
        return owner.__name__
    return f"{owner.__module__}.{owner.__qualname__}"


def diagnose_targets() -> list[TargetStatus]:
    """Every target configured in the environment or in this process, and whether it was found (read from the
    module's source where this process has not seen it defined; nothing is imported)."""
    configured: dict[str, tuple[Kind, str]] = {
        RETRY_TARGETS_ENV: (RETRY, os.environ.get(RETRY_TARGETS_ENV, "")),
        BREAKER_TARGETS_ENV: (BREAKER, os.environ.get(BREAKER_TARGETS_ENV, "")),
    }
    live: dict[str, tuple[TargetSpec, bool | None, str]] = {}
    with _STATE.lock:
        for key, registration in _STATE.registrations.items():
            spec = registration.spec
            if registration.places:
                places = ", ".join(f"{_where(owner)}.{attr}" for owner, attr in registration.places)
                live[key] = (spec, True, f"patched: {places}")
            elif registration.problem is not None:
                live[key] = (spec, False, registration.problem)
            else:
                found, detail = static_status(spec)
                live[key] = (spec, found, f"not defined in this process yet (patched when it is); {detail}")
    return target_statuses(configured, live)


__all__ = [
    "BREAKER_TARGETS_ENV",
    "RETRY_TARGETS_ENV",
    "TargetStatus",
    "diagnose_targets",
    "instrument_from_environment",
    "instrument_targets",
    "uninstrument_targets",
]
