"""``python -m otel_resilience``: installed versions, supported ranges, in-range checks, instrumentation state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from otel_resilience import __main__ as diagnostics
from otel_resilience.instrumentation import INSTRUMENTORS
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from otel_resilience.instrumentation.tenacity.package import _instruments as tenacity_instruments
from tests.conftest import Otel
from tests.support.processes import LAUNCHER, checked, clean_env, run


@pytest.fixture(autouse=True)
def _no_disabled_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", raising=False)


@pytest.fixture
def tenacity_on(otel: Otel) -> Iterator[None]:
    TenacityInstrumentor().instrument(**otel.kwargs())
    yield
    TenacityInstrumentor().uninstrument()


def _status(library: str) -> diagnostics.LibraryStatus:
    (status,) = [s for s in diagnostics.diagnose() if s.library == library]
    return status


def test_every_supported_library_is_listed_in_order() -> None:
    assert [s.entry_point for s in diagnostics.diagnose()] == list(INSTRUMENTORS)


def test_tenacity_installed_version_range_and_state() -> None:
    status = _status("tenacity")
    assert status.distribution == "tenacity"
    assert status.installed == version("tenacity")
    assert status.supported == str(Requirement(tenacity_instruments[0]).specifier)
    assert status.in_range is True
    assert status.instrumented is False
    assert status.disabled is False


def test_instrumented_follows_the_instrumentor(tenacity_on: None) -> None:
    assert _status("tenacity").instrumented is True
    assert _status("pybreaker").instrumented is False
    TenacityInstrumentor().uninstrument()
    assert _status("tenacity").instrumented is False


def test_without_its_package_module_the_range_comes_from_instruments_any(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "otel_resilience.instrumentation.tenacity.package", None)
    declared = [Requirement(r) for r in requires("otel-resilience") or [] if "instruments-any" in r]
    (tenacity,) = [r for r in declared if r.name == "tenacity"]
    assert _status("tenacity").supported == str(tenacity.specifier)


def test_a_version_outside_the_range_and_a_missing_library(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_version(name: str) -> str:
        if name == "backoff":
            raise PackageNotFoundError(name)
        return "7.0.0" if name == "tenacity" else version(name)

    monkeypatch.setattr(diagnostics, "version", fake_version)
    assert (_status("tenacity").installed, _status("tenacity").in_range) == ("7.0.0", False)
    assert (_status("backoff").installed, _status("backoff").in_range) == (None, None)

    assert diagnostics.main([]) == 0


def test_disabled_instrumentations_are_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "requests, resilience_pybreaker")
    assert _status("pybreaker").disabled is True
    assert _status("tenacity").disabled is False
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "*")
    assert all(s.disabled for s in diagnostics.diagnose())


def test_the_report_for_people(capsys: pytest.CaptureFixture[str], tenacity_on: None) -> None:
    assert diagnostics.main([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"otel-resilience {diagnostics.__version__} (Python ")
    assert lines[2].split() == ["library", "installed", "supported", "in", "range", "instrumented"]
    assert lines[3].split() == ["tenacity", version("tenacity"), str(Requirement(tenacity_instruments[0]).specifier),
                                "yes", "yes"]
    pybreaker_row = next(line for line in lines if line.startswith("pybreaker "))
    assert pybreaker_row.split()[-2:] == ["yes", "no"]
    assert "tracer provider: none configured" in lines
    assert not any("nothing is instrumented" in line for line in lines)


def test_the_report_says_what_to_do_when_nothing_is_instrumented(capsys: pytest.CaptureFixture[str]) -> None:
    diagnostics.main([])
    out = capsys.readouterr().out
    assert "note: nothing is instrumented in this process: run your app under `opentelemetry-instrument`" in out


def test_json_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert diagnostics.main(["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["version"] == diagnostics.__version__
    assert [entry["library"] for entry in report["libraries"]] == [s.library for s in diagnostics.diagnose()]
    assert report["libraries"][0] == {
        "library": "tenacity",
        "entry_point": "resilience_tenacity",
        "distribution": "tenacity",
        "supported": str(Requirement(tenacity_instruments[0]).specifier),
        "installed": version("tenacity"),
        "in_range": True,
        "instrumented": False,
        "disabled": False,
    }
    assert report["opentelemetry"]["opentelemetry-api"] == version("opentelemetry-api")


def test_under_the_launcher_the_console_script_shows_what_it_switched_on() -> None:
    script = Path(sys.executable).parent / "otel-resilience"
    env = clean_env(
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="resilience_pybreaker",
    )
    report = json.loads(checked(run([str(LAUNCHER), str(script), "--json"], env)).stdout)
    states = {entry["library"]: (entry["instrumented"], entry["disabled"]) for entry in report["libraries"]}
    assert states["tenacity"] == (True, False)
    assert states["pybreaker"] == (False, True)
    assert report["tracer_provider"] == "opentelemetry.sdk.trace.TracerProvider"


_HIDE_AND_LAUNCH = '''
"""Hide one installed library (its modules and its distribution metadata), then start the launcher's work exactly
as its own sitecustomize does."""
import importlib.machinery
import sys

HIDDEN = "pybreaker"


class HidingPathFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == HIDDEN or name.startswith(HIDDEN + "."):
            return None
        return importlib.machinery.PathFinder.find_spec(name, path, target)

    @classmethod
    def find_distributions(cls, *args, **kwargs):
        found = importlib.machinery.PathFinder.find_distributions(*args, **kwargs)
        return (d for d in found if (d.metadata["Name"] or "").lower() != HIDDEN)

    @classmethod
    def invalidate_caches(cls):
        importlib.machinery.PathFinder.invalidate_caches()


sys.meta_path[:] = [HidingPathFinder if f is importlib.machinery.PathFinder else f for f in sys.meta_path]

from opentelemetry.instrumentation.auto_instrumentation import initialize

initialize()
'''


def test_under_the_launcher_a_missing_library_is_not_instrumented(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(_HIDE_AND_LAUNCH)
    env = clean_env(
        PYTHONPATH=str(tmp_path),
        OTEL_TRACES_EXPORTER="none",
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
    )
    report = json.loads(checked(run([sys.executable, "-m", "otel_resilience", "--json"], env)).stdout)
    states = {entry["library"]: (entry["installed"], entry["instrumented"]) for entry in report["libraries"]}
    assert states["pybreaker"] == (None, False)
    assert states["tenacity"] == (version("tenacity"), True)  # the launcher did run: the others are patched
    assert report["id_generator"] == "otel_resilience._setup.ids.PrivateRandomIdGenerator"

    text = checked(run([sys.executable, "-m", "otel_resilience"], env)).stdout
    (row,) = [line.split() for line in text.splitlines() if line.startswith("pybreaker ")]
    assert row[1:3] == ["not", "installed"] and row[-1] == "no"


def test_a_closed_pipe_ends_the_report_quietly() -> None:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write, as after `otel-resilience --json | head -0`
    try:
        result = subprocess.run(
            [sys.executable, "-m", "otel_resilience", "--json"], stdout=write, stderr=subprocess.PIPE, text=True,
            env=clean_env(), timeout=120,
        )
    finally:
        os.close(write)
    assert result.stderr == ""
    assert result.returncode == 1


def test_an_app_provider_with_the_sdk_s_default_ids_is_reported_with_what_to_do(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    monkeypatch.setattr(diagnostics.trace, "get_tracer_provider", TracerProvider)
    diagnostics.main([])
    out = capsys.readouterr().out
    assert "span ids:        global random (the SDK's default)" in out
    assert "TracerProvider(id_generator=otel_resilience.PrivateRandomIdGenerator())" in out
    assert "OTEL_PYTHON_ID_GENERATOR=resilience_random" in out
