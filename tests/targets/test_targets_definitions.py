"""Targets patched the moment their code is defined (a class statement, a module-level ``def``), so a module's own
top-level code is traced; the hooks exist only while a target waits and are put back exactly. And which argument is
the attempted callable: never a class, and a call with none is left untouched and said once."""

from __future__ import annotations

import asyncio
import builtins
import importlib
import importlib.machinery
import inspect
import logging
import sys
from typing import Any

import pytest

from otel_resilience import semconv
from otel_resilience.targets import _STATE, instrument_targets, uninstrument_targets
from otel_resilience.targets._definitions import DefiningFinder
from tests.support._targets_support import AppModules, Instrument, apps, by_name, targets
from tests.conftest import Otel

__all__ = ["apps", "targets"]  # fixtures


def _attempts(otel: Otel, name: str) -> list[int]:
    """The attempts of each operation span of `name`, in the order they ended."""
    return [s.attributes[semconv.RETRY_ATTEMPTS] for s in by_name(otel, f"retry {name}")]


def test_a_modules_own_top_level_calls_are_traced(otel: Otel, targets: Instrument, apps: AppModules) -> None:
    name = apps.fresh("_targets_toplevel.py")
    targets(retry=[f"{name}:Retrier.execute", f"{name}:retry_call"])
    app = importlib.import_module(name)
    assert app.AT_IMPORT == ("first", "second")
    assert _attempts(otel, "first") == [2] and _attempts(otel, "second") == [3]
    assert [s.attributes[semconv.RETRY_ATTEMPT] for s in by_name(otel, "second")] == [1, 2, 3]
    # the module is what it would be: its loader, its source, its functions' code and lines
    assert type(app.__loader__) is importlib.machinery.SourceFileLoader
    assert type(app.__spec__.loader) is importlib.machinery.SourceFileLoader
    assert "def retry_call(fn, *args):" in inspect.getsource(app)
    original = app.retry_call.__wrapped__
    assert original.__code__.co_firstlineno == inspect.getsource(app).splitlines().index("def retry_call(fn, *args):") + 1
    assert not any(isinstance(f, DefiningFinder) for f in sys.meta_path)  # nothing waits any more


def test_hooks_exist_only_while_a_target_waits_and_are_put_back_exactly(otel: Otel, apps: AppModules) -> None:
    original = builtins.__build_class__
    meta_path = list(sys.meta_path)
    name = apps.fresh("_targets_toplevel.py")
    try:
        instrument_targets([f"{name}:Retrier.execute"], **otel.kwargs())
        assert builtins.__build_class__ is not original
        assert isinstance(sys.meta_path[0], DefiningFinder)
        importlib.import_module(name)
        assert builtins.__build_class__ is original  # found: nothing waits
        assert sys.meta_path == meta_path
        with pytest.raises(ValueError, match=f"{name} has no attribute 'Nope'"):
            instrument_targets([f"{name}:Nope.execute"], **otel.kwargs())  # imported and done: an error, no waiting
    finally:
        uninstrument_targets()
    later = apps.fresh("_targets_toplevel.py")
    instrument_targets([f"{later}:Retrier.execute", f"{later}:retry_call"], **otel.kwargs())
    uninstrument_targets()  # never imported: the hooks go with the targets
    assert builtins.__build_class__ is original
    assert sys.meta_path == meta_path


def test_another_tool_wrapping_build_class_after_us_keeps_its_layer(otel: Otel, apps: AppModules) -> None:
    original = builtins.__build_class__
    seen: list[str] = []

    def theirs(func: Any, name: str, /, *bases: Any, **kwds: Any) -> Any:
        seen.append(name)
        return ours(func, name, *bases, **kwds)

    first = apps.fresh("_targets_toplevel.py")
    try:
        instrument_targets([f"{first}:Retrier.execute"], **otel.kwargs())
        ours = builtins.__build_class__
        builtins.__build_class__ = theirs
        uninstrument_targets()
        assert builtins.__build_class__ is theirs  # left alone; ours below passes straight through

        class Plain:
            pass

        assert seen == ["Plain"]
        second = apps.fresh("_targets_toplevel.py")
        instrument_targets([f"{second}:Retrier.execute"], **otel.kwargs())  # ours watches again, from below
        assert builtins.__build_class__ is theirs
        app = importlib.import_module(second)
        assert app.AT_IMPORT == ("first", "second")
        assert _attempts(otel, "first") == [2]
    finally:
        uninstrument_targets()
        builtins.__build_class__ = original if builtins.__build_class__ is theirs else builtins.__build_class__
    assert builtins.__build_class__ is original


def test_class_statement_keywords_named_like_its_parameters_pass_through(otel: Otel, apps: AppModules) -> None:
    name = apps.fresh("_targets_toplevel.py")
    instrument_targets([f"{name}:Retrier.execute"], **otel.kwargs())
    try:

        class Base:
            def __init_subclass__(cls, **kwargs: Any) -> None:
                cls.received = kwargs

        class Child(Base, func=1, name=2):
            pass

        assert Child.received == {"func": 1, "name": 2}  # type: ignore[attr-defined]
    finally:
        uninstrument_targets()


# --- which argument is the attempted callable ------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["request", "request_fn_first"])
def test_a_class_argument_is_never_the_attempted_callable(otel: Otel, targets: Instrument, apps: AppModules, method: str) -> None:
    app = apps.imported("_targets_toplevel.py")
    targets(retry=[f"{app.__name__}:Client.{method}"])
    client = app.Client(failures=2)
    result = getattr(client, method)(*((app.Model, client.operation) if method == "request" else (client.operation, app.Model)))
    assert isinstance(result, app.Model) and result.value == 3
    assert _attempts(otel, "Client.operation") == [3]  # the real attempts, not one attempt of the class


@pytest.mark.parametrize("method", ["arequest", "arequest_fn_first"])
def test_a_class_argument_is_never_the_attempted_callable_async(otel: Otel, targets: Instrument, apps: AppModules, method: str) -> None:
    app = apps.imported("_targets_toplevel.py")
    targets(retry=[f"{app.__name__}:Client.{method}"])
    calls = 0

    async def operation() -> int:
        nonlocal calls
        calls += 1
        if calls <= 1:
            raise ConnectionError("busy")
        return calls

    client = app.Client(failures=0)
    args = (app.Model, operation) if method == "arequest" else (operation, app.Model)
    result = asyncio.run(getattr(client, method)(*args))
    assert isinstance(result, app.Model) and result.value == 2
    name = "test_a_class_argument_is_never_the_attempted_callable_async.<locals>.operation"
    assert _attempts(otel, name) == [2]


def test_what_the_helper_can_ask_of_its_arguments_is_unchanged(otel: Otel, targets: Instrument, apps: AppModules) -> None:
    app = apps.imported("_targets_toplevel.py")
    client = app.Client(failures=0)
    plain = client.observe(app.Model, client.operation)
    targets(retry=[f"{app.__name__}:Client.observe"])
    assert client.observe(app.Model, client.operation) == plain
    assert plain == (True, True, True, True, True, True, True, "operation", True, None)


def test_a_call_with_no_callable_argument_is_left_untouched_and_said_once(
    otel: Otel, targets: Instrument, apps: AppModules, caplog: pytest.LogCaptureFixture
) -> None:
    app = apps.imported("_targets_toplevel.py")
    targets(retry=[f"{app.__name__}:Client.with_classes_only"], breaker=[f"{app.__name__}:Client.guard_with_classes_only:cast_to@failures"])
    client = app.Client(failures=0)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        for _ in range(3):
            assert client.with_classes_only(app.Model) is True  # the very objects, untouched
            assert client.guard_with_classes_only(app.Model) is True
    assert otel.spans() == []
    assert [r.getMessage() for r in caplog.records] == [
        f"otel_resilience: a call of retry target {app.__name__}:Client.with_classes_only was left untouched (not "
        "traced): none of its arguments was a callable that is not a class. Name the parameter that receives the "
        f"attempted operation: {app.__name__}:Client.with_classes_only:argname",
        f"otel_resilience: a call of breaker target {app.__name__}:Client.guard_with_classes_only:cast_to@failures was "
        "left untouched (not traced): its argument 'cast_to' was not a callable that is not a class. Name the "
        f"parameter that receives the guarded function: {app.__name__}:Client.guard_with_classes_only:argname@failures",
    ]


def test_a_target_module_that_does_not_compile_raises_its_own_error(otel: Otel, targets: Instrument, apps: AppModules) -> None:
    name = apps.fresh("_targets_toplevel.py")
    path = apps.directory / f"{name}.py"
    path.write_text(path.read_text() + "\ndef broken(:\n")
    targets(retry=[f"{name}:retry_call"])
    with pytest.raises(SyntaxError) as raised:
        importlib.import_module(name)
    assert raised.value.filename == str(path) and raised.value.lineno == len(path.read_text().splitlines())


_NESTED = '''
import functools

def logged(fn):
    @functools.wraps(fn)
    def wrapper(*args):
        return fn(*args)
    wrapper.logged = True
    return wrapper

try:
    import not_a_module_anywhere
except ImportError:
    @logged
    def retry_call(fn, *args):
        for _ in range(2):
            try:
                return fn(*args)
            except ValueError:
                pass
        return fn(*args)

if True:
    async def retry_async(fn):
        return await fn()

failures = [ValueError("once")]

def op():
    if failures:
        raise failures.pop()
    return "done"

AT_IMPORT = retry_call(op)
'''


def test_defs_inside_blocks_and_decorated_defs_are_patched_as_bound(otel: Otel, targets: Instrument, apps: AppModules) -> None:
    """The patch is applied to what the ``def`` bound (the decorated function), wherever the def sits at module
    level."""
    name = apps.fresh("_targets_toplevel.py")
    (apps.directory / f"{name}.py").write_text(_NESTED)
    targets(retry=[f"{name}:retry_call", f"{name}:retry_async"])
    app = importlib.import_module(name)
    assert app.AT_IMPORT == "done"
    assert _attempts(otel, "op") == [2]
    assert app.retry_call.logged is True and app.retry_call.__wrapped__.logged is True  # ours around the app's
    assert inspect.iscoroutinefunction(app.retry_async) and hasattr(app.retry_async, "__wrapped__")
