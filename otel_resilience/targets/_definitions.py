"""Seeing a target's class or function the moment it is defined, so that a module's own top-level code (a script run
as ``__main__`` included) already calls the patched helper, without ``sys.settrace``. `ClassHook` sits in
``builtins.__build_class__`` while a target waits for its class; `DefiningFinder` loads a module named in a function
target with one extra statement after each ``def`` of a target's name (same lines and code objects). How, and what
cannot be seen (module-level functions of ``python app.py``): docs/targets.md, "How a target is seen when it is
defined"."""

from __future__ import annotations

import ast
import builtins
import importlib.abc
import importlib.machinery
import sys
import threading
import types
from collections.abc import Callable, Container, Mapping
from pathlib import Path
from typing import Any

import wrapt.importer

from otel_resilience.core import never_raises

MAIN = "__main__"


def main_names() -> set[str]:
    """The names the program's ``__main__`` module goes by: ``__main__``, and the module name of the script
    (``app`` for ``python app.py``, the module's own name for ``python -m app``), once it is known."""
    names = {MAIN}
    main = sys.modules.get(MAIN)
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if isinstance(name, str) and name:
        names.add(name)
        return names
    file = script_path()
    if file is not None and file.endswith(".py"):
        stem = Path(file).stem
        if stem.isidentifier():
            names.add(stem)
    return names


def script_path() -> str | None:
    """The file of a script run as ``python app.py`` (``__file__`` is removed once it finished; its loader stays)."""
    main = sys.modules.get(MAIN)
    file = getattr(main, "__file__", None) or getattr(getattr(main, "__loader__", None), "path", None)
    return file if isinstance(file, str) else None


def running_as_main(name: str) -> bool:
    """Whether `name` is the module that ``python -m`` is about to run as ``__main__`` (runpy looks it up while
    ``sys.argv[0]`` is still ``-m``)."""
    if sys.argv[:1] != ["-m"]:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "_get_module_details" and "runpy" in code.co_filename:  # "<frozen runpy>" in 3.11
            return frame.f_locals.get("mod_name") == name
        frame = frame.f_back  # type: ignore[assignment]
    return False


def module_names(module_name: str) -> set[str]:
    """The names a module defining something goes by (several for ``__main__``)."""
    return main_names() if module_name == MAIN else {module_name}


# --- classes -------------------------------------------------------------------------------------------------------


class ClassHook:
    """``builtins.__build_class__``, wrapped while `callback` is set: the callback gets each new class whose
    qualified name is awaited."""

    def __init__(self) -> None:
        self._previous: Any = None
        self._callback: Callable[[type], None] | None = None
        self._awaited: Container[str] = ()
        self._installed = False
        """Our function is somewhere in the chain (perhaps below another tool's layer)."""
        hook = self

        def __build_class__(func: Any, name: Any, /, *bases: Any, **kwds: Any) -> Any:  # noqa: N807
            cls = hook._previous(func, name, *bases, **kwds)
            callback = hook._callback
            if callback is not None:
                try:  # inline: every class statement of the program comes here while a target waits
                    awaited = cls.__qualname__ in hook._awaited
                except Exception:  # whatever a metaclass returned
                    awaited = False
                if awaited:
                    callback(cls)
            return cls

        self._function = __build_class__

    def install(self, callback: Callable[[type], None], awaited: Container[str]) -> None:
        self._callback = callback
        self._awaited = awaited
        if not self._installed:
            self._previous = builtins.__build_class__
            builtins.__build_class__ = self._function
            self._installed = True

    def remove(self) -> None:
        """Stop watching; put back the previous object when ours is still the outermost layer."""
        self._callback = None
        self._awaited = ()
        if self._installed and builtins.__build_class__ is self._function:
            builtins.__build_class__ = self._previous
            self._installed = False
            self._previous = None


# --- module-level functions, and modules that finished executing -------------------------------------------------


def _definition_call(key: str, lineno: int, col: int) -> ast.stmt:
    """``__import__('otel_resilience.targets._definitions', fromlist=('defined',)).defined(key, __name__)``."""
    module = ast.Call(
        func=ast.Name("__import__", ast.Load()),
        args=[ast.Constant(__name__)],
        keywords=[ast.keyword("fromlist", ast.Tuple([ast.Constant("defined")], ast.Load()))],
    )
    call = ast.Call(ast.Attribute(module, "defined", ast.Load()), [ast.Constant(key), ast.Name("__name__", ast.Load())], [])
    statement = ast.Expr(call)
    for node in ast.walk(statement):
        node.lineno = node.end_lineno = lineno  # type: ignore[attr-defined]
        node.col_offset = node.end_col_offset = col  # type: ignore[attr-defined]
    return statement


_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")


def insert_definitions(tree: ast.Module, functions: Mapping[str, str]) -> int:
    """After every module-level ``def`` (also inside ``if``/``try``/``with``/loops, not inside functions or classes)
    whose name is a key of `functions`, insert the statement that reports it defined. Returns how many."""
    inserted = 0

    def visit(statements: list[Any]) -> None:
        nonlocal inserted
        index = 0
        while index < len(statements):
            node = statements[index]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = functions.get(node.name)
                if key is not None:
                    statements.insert(index + 1, _definition_call(key, node.lineno, node.col_offset))
                    inserted += 1
                    index += 1
            elif not isinstance(node, ast.ClassDef):
                for block in _BLOCKS:
                    inner = getattr(node, block, None)
                    if isinstance(inner, list):
                        visit(inner)
            index += 1

    visit(tree.body)
    return inserted


Defined = Callable[[str, str], None]
"""``defined(key, module name)``: the function of target `key` was just bound in that module."""
Executed = Callable[[types.ModuleType], None]
"""The module finished executing its body."""


class _DefiningLoader(importlib.abc.Loader):
    """Stands in for a module's loader while it is imported: compiles it with the definition statements (source
    modules only), and reports when its body ran. The module and its spec get their own loader back before any of
    their code runs."""

    def __init__(self, loader: Any, spec: importlib.machinery.ModuleSpec, functions: Mapping[str, str], executed: Executed) -> None:
        self.loader = loader
        self.spec = spec
        self.functions = functions
        self.executed = executed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self.loader.create_module(spec)  # type: ignore[no-any-return]

    def get_code(self, fullname: str) -> types.CodeType | None:
        """The module's code, with the definition statements (``runpy`` asks this for ``python -m``)."""
        self.spec.loader = self.loader
        code = _compiled(self.loader, fullname, self.functions) if self.functions else None
        return code if code is not None else self.loader.get_code(fullname)  # type: ignore[no-any-return]

    def exec_module(self, module: types.ModuleType) -> None:
        self.spec.loader = self.loader
        if getattr(module, "__loader__", None) is self:
            module.__loader__ = self.loader
        code = _compiled(self.loader, module.__name__, self.functions) if self.functions else None
        if code is None:
            self.loader.exec_module(module)
        else:
            exec(code, module.__dict__)  # noqa: S102  # the module's own code, as SourceFileLoader runs it
        self.executed(module)


@never_raises
def _compiled(loader: Any, fullname: str, functions: Mapping[str, str]) -> types.CodeType | None:
    """The module compiled with the definition statements; None to let its loader do as always (no source, no such
    ``def``, or source that does not compile: the loader then raises the app's own error)."""
    if not isinstance(loader, importlib.machinery.SourceFileLoader):
        return None
    path = loader.get_filename(fullname)
    try:
        source = loader.get_source(fullname)
        if source is None:
            return None
        tree = ast.parse(source, path)
    except (ImportError, SyntaxError, ValueError):
        return None
    if not insert_definitions(tree, functions):
        return None
    return compile(tree, path, "exec", dont_inherit=True)  # type: ignore[no-any-return]


class DefiningFinder(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path`` while targets wait for a module: hands those modules `_DefiningLoader`."""

    def __init__(self, wanted: Callable[[str], Mapping[str, str] | None], executed: Executed) -> None:
        self.wanted = wanted
        """The function targets awaited in a module, by function name (None: the module is not awaited)."""
        self.executed = executed
        self._busy = threading.local()

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        functions = self.wanted(fullname)
        if functions is None or getattr(self._busy, "name", None) == fullname:
            return None
        self._busy.name = fullname
        try:
            spec = self._find_with_the_others(fullname, path, target)
        finally:
            self._busy.name = None
        loader = getattr(spec, "loader", None)
        if spec is None or loader is None or not hasattr(loader, "exec_module"):
            return spec
        spec.loader = _DefiningLoader(loader, spec, dict(functions), self.executed)
        return spec

    def _find_with_the_others(self, fullname: str, path: Any, target: Any) -> importlib.machinery.ModuleSpec | None:
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, wrapt.importer.ImportHookFinder):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                return spec  # type: ignore[no-any-return]
        return None

    def install(self) -> None:
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


_on_defined: Defined | None = None


def set_on_defined(callback: Defined | None) -> None:
    global _on_defined
    _on_defined = callback


def defined(key: str, module_name: str) -> None:
    """Called by the statement compiled after a target's ``def``: never raises into the module's import."""
    callback = _on_defined
    if callback is not None:
        never_raises(callback)(key, module_name)
