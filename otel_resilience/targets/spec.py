"""Configured targets: their syntax, its checks, and finding the callable a target names.

    retry target    module:Qual.name[:argname][[style]]      style: call (the default) or decorator
    breaker target  module:Qual.name[:argname]@state_attr    state_attr may be dotted: @_impl.state

`:argname` names the parameter that receives the user's callable (the attempted one, or the guarded one); without it,
the first callable argument that is not a class is taken. Everything here only reads: nothing is patched, and a module that is not imported
yet is looked for on the import path without importing it (the launcher must not import the app early).
"""

from __future__ import annotations

import importlib.machinery
import inspect
import logging
import sys
import threading
import types
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

import wrapt.importer

from otel_resilience.targets._arguments import ArgumentLocator
from otel_resilience.targets._definitions import DefiningFinder

_logger = logging.getLogger("otel_resilience")

Kind = Literal["retry", "breaker"]
RETRY: Final = "retry"
BREAKER: Final = "breaker"

STYLE_CALL: Final = "call"
"""The target is called with the callable to attempt, and calls it until it gives up (``Retrier.execute(fn)``)."""
STYLE_DECORATOR: Final = "decorator"
"""The target is a decorator (``@retry``) or decorator factory (``@retry(times=3)``) whose wrapper calls the decorated
function until it gives up."""
STYLES: Final = (STYLE_CALL, STYLE_DECORATOR)

RETRY_FORMAT: Final = (
    "module:Qual.name or module:Qual.name:argname, optionally followed by a style in brackets, [call] (the default) "
    "or [decorator]; e.g. myapp.net:Retrier.execute, myapp.net:Retrier.execute:fn, myapp.util:with_retries[decorator]"
)
BREAKER_FORMAT: Final = (
    "module:Qual.name@state_attr or module:Qual.name:argname@state_attr; e.g. myapp.cb:Breaker.call@state"
)
_FORMATS: Final = {RETRY: RETRY_FORMAT, BREAKER: BREAKER_FORMAT}


@dataclass(frozen=True)
class TargetSpec:
    """One configured target, syntax checked."""

    kind: Kind
    text: str
    module: str
    qualname: str
    argname: str | None = None
    style: str = STYLE_CALL
    state_attr: str | None = None

    @property
    def key(self) -> str:
        """What is patched: one target per ``module:Qual.name``."""
        return f"{self.module}:{self.qualname}"


def split_targets(value: str) -> list[str]:
    """A comma-separated list (the environment variables' form), blanks ignored."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _is_dotted_name(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def parse_target(kind: Kind, text: Any) -> TargetSpec:
    """Check one target's syntax; raise a `ValueError` that says what was wrong and the expected format."""
    if not isinstance(text, str):
        raise ValueError(f"{kind} target {text!r} is a {type(text).__name__}, not a string; expected {_FORMATS[kind]}")
    rest = text.strip()

    def bad(why: str) -> ValueError:
        return ValueError(f"{kind} target {text!r}: {why}; expected {_FORMATS[kind]}")

    style = STYLE_CALL
    if rest.endswith("]"):
        opening = rest.rfind("[")
        if opening < 0:
            raise bad("']' without '['")
        if kind == BREAKER:
            raise bad("breaker targets take no [style]")
        style = rest[opening + 1 : -1].strip()
        rest = rest[:opening].rstrip()
        if style not in STYLES:
            raise bad(f"unknown style {style!r} (the styles are: {', '.join(STYLES)})")
    elif "[" in rest:
        raise bad("'[' without ']'")

    state_attr: str | None = None
    if "@" in rest:
        if kind == RETRY:
            raise bad("'@state_attr' is for breaker targets")
        rest, _, state_attr = rest.rpartition("@")
        if not _is_dotted_name(state_attr):
            raise bad(f"the state attribute {state_attr!r} is not a (dotted) Python name")
    elif kind == BREAKER:
        raise bad("the state attribute is missing (add '@' and the attribute that holds the breaker's state)")

    parts = rest.split(":")
    if len(parts) < 2:
        raise bad("no ':' between the module and the qualified name")
    if len(parts) > 3:
        raise bad("too many ':'")
    module, qualname = parts[0], parts[1]
    argname = parts[2] if len(parts) == 3 else None
    if not _is_dotted_name(module):
        raise bad(f"the module {module!r} is not a dotted Python name")
    if not _is_dotted_name(qualname):
        raise bad(f"the qualified name {qualname!r} is not a dotted Python name")
    if argname is not None and not argname.isidentifier():
        raise bad(f"the argument name {argname!r} is not a Python identifier")
    return TargetSpec(kind, text.strip(), module, qualname, argname, style, state_attr)


def parse_targets(kind: Kind, texts: Iterable[Any] | str) -> tuple[list[TargetSpec], list[str]]:
    """Parse every target of one kind (a string is read as a comma-separated list): the good ones, and a message per
    bad one."""
    if isinstance(texts, str):
        texts = split_targets(texts)
    specs: list[TargetSpec] = []
    problems: list[str] = []
    for text in texts:
        try:
            specs.append(parse_target(kind, text))
        except ValueError as exc:
            problems.append(str(exc))
    return specs, problems


# --- finding a module without importing it ----------------------------------------------------------------------


def _find_spec_without_import(name: str, path: Any) -> importlib.machinery.ModuleSpec | None:
    """What `importlib` would find for `name` in the parent's `path`, asking the meta path finders directly, so that
    no parent package is imported (``importlib.util.find_spec`` imports parents). wrapt's post-import finder is
    skipped (it delegates to ``find_spec``, which would import), and so is ours (it only wraps the loader)."""
    for finder in sys.meta_path:
        if isinstance(finder, (wrapt.importer.ImportHookFinder, DefiningFinder)):
            continue
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec(name, path)
        except (ImportError, AttributeError, ValueError):
            continue
        if spec is not None:
            return spec  # type: ignore[no-any-return]
    return None


def find_module_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """The spec of module `name` as the import path would find it, without importing it or its parents (no app code
    runs); an imported module's own spec. Packages that extend their ``__path__`` only when imported are not seen
    through: name their modules after importing them."""
    if name in sys.modules:
        return getattr(sys.modules[name], "__spec__", None) or importlib.machinery.ModuleSpec(name, None)
    path: Any = None
    parts = name.split(".")
    spec: importlib.machinery.ModuleSpec | None = None
    for depth in range(1, len(parts) + 1):
        prefix = ".".join(parts[:depth])
        module = sys.modules.get(prefix)
        if module is not None:
            path = getattr(module, "__path__", None)
            continue
        if depth > 1 and path is None:
            return None  # a plain module has no submodules
        spec = _find_spec_without_import(prefix, path)
        if spec is None:
            return None
        path = spec.submodule_search_locations
    return spec


def module_findable(name: str) -> bool:
    """Whether module `name` can be found on the import path, without importing it (see `find_module_spec`)."""
    return find_module_spec(name) is not None


# --- resolving a target in its imported module --------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    """A target found in its module: where to patch it and how it is called."""

    spec: TargetSpec
    owner: Any
    """The module or class whose attribute is patched."""
    attr: str
    locator: ArgumentLocator
    """Finds the app's callable among the target's arguments."""
    is_async: bool
    """An ``async def`` target: its operation or call lasts until its coroutine is done."""
    streams: str | None = None
    """``"sync"`` for a generator function, ``"async"`` for an async generator function: its operation lasts
    while what it returned is consumed (see `stream_kind`)."""


def stream_kind(function: Any) -> str | None:
    """``"sync"``/``"async"`` when `function` is a generator / async generator function (its body runs only as its
    result is consumed), else None."""
    if inspect.isasyncgenfunction(function):
        return "async"
    if inspect.isgeneratorfunction(function):
        return "sync"
    return None


def _defining_class(cls: type, attr: str) -> type | None:
    return next((base for base in cls.__mro__ if attr in vars(base)), None)


class Missing(ValueError):
    """The target's name is not (yet) in its module or class: a module still executing may define it later."""


def resolve(spec: TargetSpec, module: types.ModuleType) -> Resolved:
    """Find the target in its (imported) module; raise a `ValueError` when it is not there (`Missing`) or cannot be
    patched."""
    owner: Any = module
    where = spec.module
    *path, attr = spec.qualname.split(".")
    for part in path:
        try:
            owner = getattr(owner, part)
        except AttributeError:
            raise Missing(f"{spec.kind} target {spec.text!r}: {where} has no attribute {part!r}") from None
        where = f"{where}.{part}"
    return resolve_on(spec, owner, where)


def resolve_on(spec: TargetSpec, owner: Any, where: str) -> Resolved:
    """Find the target's last name on `owner` (its module, or the class its qualified name leads to, named `where`
    in messages)."""

    def bad(why: str) -> ValueError:
        return ValueError(f"{spec.kind} target {spec.text!r}: {why}")

    attr = spec.qualname.rpartition(".")[2]
    if not isinstance(owner, (types.ModuleType, type)):
        raise bad(f"{where} is a {type(owner).__name__} object, not a class or module: name the class (module:Class.method)")
    if attr not in vars(owner):
        defining = _defining_class(owner, attr) if isinstance(owner, type) else None
        if defining is None:
            raise Missing(f"{spec.kind} target {spec.text!r}: {where} has no attribute {attr!r}")
        raise bad(
            f"{where}.{attr} is inherited from {defining.__module__}.{defining.__qualname__}: name that class "
            f"({defining.__module__}:{defining.__qualname__}.{attr}), which traces every class that inherits it"
        )
    raw = vars(owner)[attr]
    if isinstance(owner, type) and not isinstance(raw, (types.FunctionType, staticmethod, classmethod)):
        raise bad(
            f"{where}.{attr} is a {type(raw).__name__}: only functions, methods, static methods and class methods "
            "of a class can be patched"
        )
    function = getattr(owner, attr)
    if isinstance(function, type):
        raise bad(f"{where}.{attr} is a class: name the function or method that does the work (module:Class.method)")
    if not callable(function):
        raise bad(f"{where}.{attr} is not callable (it is a {type(function).__name__})")
    locator = _locator(spec, owner, attr, function, bad)
    return Resolved(spec, owner, attr, locator, inspect.iscoroutinefunction(function), stream_kind(function))


def _locator(spec: TargetSpec, owner: Any, attr: str, function: Any, bad: Any) -> ArgumentLocator:
    """How to find the user's callable among the target's arguments, checked against its signature now."""
    if spec.argname is None or spec.style == STYLE_DECORATOR:
        # A decorator factory's own signature need not have the parameter: the decorator it returns may.
        return ArgumentLocator(spec.argname)
    where = f"{spec.module}.{spec.qualname}"
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        raise bad(f"the signature of {where} cannot be read, so the argument {spec.argname!r} cannot be found") from None
    if isinstance(owner, type) and isinstance(vars(owner)[attr], types.FunctionType):
        parameters = parameters[1:]  # self: wrapt hands the wrapper the arguments after it
    try:
        return ArgumentLocator.for_parameters(parameters, spec.argname)
    except ValueError as exc:
        raise bad(f"{where}: {exc}") from None


_reported: set[str] = set()
_reported_lock = threading.Lock()


def report_no_callable(target: Resolved) -> None:
    """Say once per target that a call had no argument to watch, so it was left untouched."""
    text = target.spec.text
    with _reported_lock:
        if text in _reported:
            return
        _reported.add(text)
    spec = target.spec
    named = f"its argument {spec.argname!r} was not" if spec.argname else "none of its arguments was"
    form = f"{spec.module}:{spec.qualname}:argname" + (f"@{spec.state_attr}" if spec.state_attr else "")
    _logger.warning(
        "otel_resilience: a call of %s target %s was left untouched (not traced): %s a callable that is not a class. "
        "Name the parameter that receives the %s: %s",
        spec.kind,
        text,
        named,
        "attempted operation" if spec.kind == "retry" else "guarded function",
        form,
    )
