"""Configured targets: every bad configuration is a clear ValueError (nothing patched), post-import hooks, the
environment path under the launcher (one error logged, never raises)."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable, Iterator

import pytest

from otel_resilience import targets as targets_module
from otel_resilience.targets import (
    BREAKER_TARGETS_ENV,
    RETRY_TARGETS_ENV,
    instrument_from_environment,
    instrument_targets,
    uninstrument_targets,
)
from tests.support._targets_support import AppModules, Flaky, apps
from tests.conftest import Otel

__all__ = ["apps"]  # fixtures

RETRY_EXPECTED = "expected module:Qual.name or module:Qual.name:argname, optionally followed by a style in brackets"
BREAKER_EXPECTED = "expected module:Qual.name@state_attr or module:Qual.name:argname@state_attr"


@pytest.fixture(autouse=True)
def undone() -> Iterator[None]:
    yield
    uninstrument_targets()


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("myapp.net", "no ':' between the module and the qualified name"),
        ("", "no ':' between the module and the qualified name"),
        ("a:b:c:d", "too many ':'"),
        ("my-app:fetch", "the module 'my-app' is not a dotted Python name"),
        (":fetch", "the module '' is not a dotted Python name"),
        ("myapp:Retrier.<locals>.f", "the qualified name 'Retrier.<locals>.f' is not a dotted Python name"),
        ("myapp:Retrier..execute", "the qualified name 'Retrier..execute' is not a dotted Python name"),
        ("myapp:execute:1fn", "the argument name '1fn' is not a Python identifier"),
        ("myapp:execute:fn.x", "the argument name 'fn.x' is not a Python identifier"),
        ("myapp:retry[loop]", "unknown style 'loop' (the styles are: call, decorator)"),
        ("myapp:retry[]", "unknown style '' (the styles are: call, decorator)"),
        ("myapp:retry]", "']' without '['"),
        ("myapp:retry[decorator", "'[' without ']'"),
        ("myapp:Breaker.call@state", "'@state_attr' is for breaker targets"),
    ],
)
def test_malformed_retry_targets(target: str, why: str) -> None:
    with pytest.raises(ValueError) as raised:
        instrument_targets(retry_targets=[target])
    message = str(raised.value)
    assert f"retry target {target!r}: {why}; {RETRY_EXPECTED}" in message


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("myapp.cb:Breaker.call", "the state attribute is missing"),
        ("myapp.cb:Breaker.call@", "the state attribute '' is not a (dotted) Python name"),
        ("myapp.cb:Breaker.call@1state", "the state attribute '1state' is not a (dotted) Python name"),
        ("myapp.cb:Breaker.call@state[decorator]", "breaker targets take no [style]"),
        ("myapp.cb@state", "no ':' between the module and the qualified name"),
        ("myapp.cb:Breaker.call:fn:x@state", "too many ':'"),
    ],
)
def test_malformed_breaker_targets(target: str, why: str) -> None:
    with pytest.raises(ValueError) as raised:
        instrument_targets(breaker_targets=[target])
    assert f"breaker target {target!r}: {why}" in str(raised.value)
    assert BREAKER_EXPECTED in str(raised.value)


def test_a_target_that_is_not_a_string() -> None:
    with pytest.raises(ValueError, match=r"retry target 42 is a int, not a string; expected module:Qual.name"):
        instrument_targets(retry_targets=[42])  # type: ignore[list-item]


def _problem(apps: AppModules, target: str, *, kind: str = "retry") -> str:
    app = apps.imported()
    before = dict(vars(app))
    with pytest.raises(ValueError) as raised:
        if kind == "retry":
            instrument_targets(retry_targets=[f"{app.__name__}:{target}"])
        else:
            instrument_targets(breaker_targets=[f"{app.__name__}:{target}"])
    assert vars(app) == before  # nothing patched
    return str(raised.value).replace(app.__name__, "app")


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("nope", "app has no attribute 'nope'"),
        ("Retrier.nope", "app.Retrier has no attribute 'nope'"),
        ("Nope.execute", "app has no attribute 'Nope'"),
        ("RECEIVED", "app.RECEIVED is not callable (it is a list)"),
        ("Retrier", "app.Retrier is a class: name the function or method that does the work (module:Class.method)"),
        ("RECEIVED.append", "app.RECEIVED is a list object, not a class or module: name the class (module:Class.method)"),
        (
            "SubRetrier.execute",
            "app.SubRetrier.execute is inherited from app.Retrier: name that class (app:Retrier.execute), which traces "
            "every class that inherits it",
        ),
        ("Odd.helper", "app.Odd.helper is a partial: only functions, methods, static methods and class methods"),
        ("run_with_policy:op", "app.run_with_policy: it has no parameter 'op' (its parameters: should_retry, operation, retries)"),
        ("Retrier.execute:args", "app.Retrier.execute: 'args' is *args: name a single parameter"),
        ("Retrier.execute:kwargs", "app.Retrier.execute: 'kwargs' is **kwargs: name a single parameter"),
    ],
)
def test_targets_that_cannot_be_patched(apps: AppModules, target: str, why: str) -> None:
    assert f"retry target 'app:{target}': {why}" in _problem(apps, target)


def test_breaker_target_attribute_not_found(apps: AppModules) -> None:
    assert "breaker target 'app:Breaker.call@state': app has no attribute 'Breaker'" in _problem(
        apps, "Breaker.call@state", kind="breaker"
    )


def test_argname_reaching_kwargs_is_accepted(otel: Otel, apps: AppModules) -> None:
    """``retry_call(fn, *args, **kwargs)`` can receive any keyword: a name it does not list is looked for there."""
    app = apps.imported()
    app.sleep = lambda seconds: None
    instrument_targets([f"{app.__name__}:retry_call:operation"], **otel.kwargs())
    flaky = Flaky(1)

    def runner(operation: Callable[[], str]) -> str:
        return operation()

    def operation() -> str:
        return flaky()

    assert app.retry_call(runner, operation=operation) == "ok"
    op = otel.span("retry test_argname_reaching_kwargs_is_accepted.<locals>.operation")
    assert op.attributes["retry.attempts"] == 2


def test_module_not_found_is_reported_without_importing_anything(apps: AppModules) -> None:
    name = apps.fresh()
    with pytest.raises(ValueError) as raised:
        instrument_targets([f"{name}:retry_call", f"{name}_missing:retry_call", "no_such_package.sub:f"])
    message = str(raised.value)
    assert f"retry target '{name}_missing:retry_call': module '{name}_missing' not found" in message
    assert "retry target 'no_such_package.sub:f': module 'no_such_package.sub' not found" in message
    assert name not in sys.modules  # looked for, never imported
    assert "no_such_package" not in sys.modules


def test_every_problem_in_one_error_and_nothing_patched(apps: AppModules) -> None:
    app = apps.imported()
    original = app.retry_call
    with pytest.raises(ValueError) as raised:
        instrument_targets(
            [f"{app.__name__}:retry_call", "bad", f"{app.__name__}:nope"],
            [f"{app.__name__}:Retrier.execute"],
        )
    lines = str(raised.value).splitlines()
    assert lines[0] == "otel_resilience: bad target configuration, nothing patched:"
    assert len(lines) == 4 and all(line.startswith("  - ") for line in lines[1:])
    # syntax first, then what the imported module lacks
    assert "'bad'" in lines[1] and "the state attribute is missing" in lines[2] and "'nope'" in lines[3]
    assert app.retry_call is original


def test_one_target_named_two_ways(apps: AppModules) -> None:
    app = apps.imported()
    with pytest.raises(ValueError, match=r"Retrier.execute is already a target \(.*Retrier.execute'\)"):
        instrument_targets([f"{app.__name__}:Retrier.execute", f"{app.__name__}:Retrier.execute:fn"])
    instrument_targets([f"{app.__name__}:Retrier.execute"])
    with pytest.raises(ValueError, match=r"already a target"):
        instrument_targets(breaker_targets=[f"{app.__name__}:Retrier.execute@state"])
    instrument_targets([f" {app.__name__}:Retrier.execute "])  # the same target again: nothing to do


def test_a_string_is_a_comma_separated_list(otel: Otel, apps: AppModules) -> None:
    app = apps.imported()
    execute, retry_call = vars(app.Retrier)["execute"], app.retry_call
    instrument_targets(f"{app.__name__}:Retrier.execute, {app.__name__}:retry_call,", **otel.kwargs())
    assert vars(app.Retrier)["execute"] is not execute and app.retry_call is not retry_call


# --- post-import hooks -----------------------------------------------------------------------------------------------


def test_module_imported_later_without_the_attribute_logs_one_error(apps: AppModules, caplog: pytest.LogCaptureFixture) -> None:
    name = apps.fresh()
    instrument_targets([f"{name}:nope", f"{name}:retry_call"])  # cannot be checked until the module is imported
    assert name not in sys.modules
    with caplog.at_level(logging.ERROR, logger="otel_resilience"):
        app = importlib.import_module(name)  # the import itself succeeds
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage() == (
        f"otel_resilience: not tracing {name}:nope (module {name} imported): retry target '{name}:nope': "
        f"{name} has no attribute 'nope'"
    )
    assert hasattr(app.retry_call, "__wrapped__")  # the good target was patched


# --- the environment (the launcher's post-instrument entry point) ----------------------------------------------------


def test_environment_patches_good_targets_and_logs_one_error(
    apps: AppModules, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = apps.imported()
    later = apps.fresh()
    monkeypatch.setenv(RETRY_TARGETS_ENV, f"{app.__name__}:retry_call, broken, {app.__name__}:nope,{later}:retry_call")
    monkeypatch.setenv(BREAKER_TARGETS_ENV, f"{app.__name__}:Retrier.execute")
    with caplog.at_level(logging.DEBUG, logger="otel_resilience"):
        instrument_from_environment()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert message.startswith(
        f"otel_resilience: ignoring bad targets in {RETRY_TARGETS_ENV}/{BREAKER_TARGETS_ENV} (the others are traced):"
    )
    assert "retry target 'broken': no ':'" in message
    assert f"retry target '{app.__name__}:nope': {app.__name__} has no attribute 'nope'" in message
    assert f"breaker target '{app.__name__}:Retrier.execute': the state attribute is missing" in message
    assert hasattr(app.retry_call, "__wrapped__")
    assert later not in sys.modules
    assert hasattr(importlib.import_module(later).retry_call, "__wrapped__")


def test_environment_does_not_look_for_modules(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Under the launcher the app's directory may not be on ``sys.path`` yet: a module not found now may be found
    when the app imports it."""
    monkeypatch.setenv(RETRY_TARGETS_ENV, "not_importable_yet:f")
    with caplog.at_level(logging.DEBUG, logger="otel_resilience"):
        instrument_from_environment()
    assert caplog.records == []
    assert "not_importable_yet" not in sys.modules


@pytest.mark.parametrize("disabled", ["resilience_targets", "requests, resilience_targets", "*"])
def test_environment_path_can_be_disabled(apps: AppModules, monkeypatch: pytest.MonkeyPatch, disabled: str) -> None:
    app = apps.imported()
    monkeypatch.setenv(RETRY_TARGETS_ENV, f"{app.__name__}:retry_call")
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", disabled)
    instrument_from_environment()
    assert not hasattr(app.retry_call, "__wrapped__")


def test_environment_unset_does_nothing(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(RETRY_TARGETS_ENV, raising=False)
    monkeypatch.setenv(BREAKER_TARGETS_ENV, " , ")
    with caplog.at_level(logging.DEBUG, logger="otel_resilience"):
        instrument_from_environment()
    assert caplog.records == [] and targets_module._STATE.registrations == {}


def test_environment_path_never_raises(apps: AppModules, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    app = apps.imported()
    monkeypatch.setenv(RETRY_TARGETS_ENV, f"{app.__name__}:retry_call")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(targets_module._STATE, "prepare", broken)
    with caplog.at_level(logging.WARNING, logger="otel_resilience"):
        instrument_from_environment()  # does not raise
    assert any("internal error in otel_resilience.targets.instrument_from_environment" in r.getMessage() for r in caplog.records)
