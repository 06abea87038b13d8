"""The single-file program, run as a script: its own retry class (or module-level function), named as a target with
either spelling (``app:...`` or ``__main__:...``), used by module-level code or under a ``__main__`` guard, traced
through the launcher or through ``setup()`` at the top of the script, exported to a real collector (rotel). The
program's own output must be what it is without us."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_resilience.targets import RETRY_TARGETS_ENV
from tests.support.collector import RotelCollector, Span, collector_or_skip
from tests.support.processes import LAUNCHER, checked, clean_env, otlp_env, run

HERE = Path(__file__).parent
LAYOUTS = ("module-level", "main-guarded")
SPELLINGS = ("app:Retrier.execute", "__main__:Retrier.execute")


def write_app(directory: Path, layout: str, *, prelude: str = "") -> Path:
    """The program as ``app.py`` in `directory`, its last block at module level or under ``if __name__ ==
    "__main__":``, with `prelude` (a ``setup()`` call) at the very top."""
    text = (HERE / "_targets_script.py").read_text()
    head, _, main = text.partition("# MAIN\n")
    if layout == "main-guarded":
        main = 'if __name__ == "__main__":\n' + "".join(f"    {line}\n" for line in main.splitlines())
    app = directory / "app.py"
    app.write_text(prelude + head + main)
    return app


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RotelCollector]:
    """One collector for the module; each run exports as its own service."""
    started = collector_or_skip(tmp_path_factory.mktemp("rotel"))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def expected_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    """What the program prints with nothing of ours (the layout does not change it)."""
    app = write_app(tmp_path_factory.mktemp("plain"), "module-level")
    output = checked(run([sys.executable, str(app)], clean_env())).stdout
    assert output.splitlines() == [
        "request 0 -> 0 after 1 calls",
        "request 1 -> 10 after 2 calls",
        "request 2 -> 20 after 3 calls",
        "helper -> 30 after 4 calls",
    ]
    return output


def _service_spans(collector: RotelCollector, service: str, count: int) -> list[Span]:
    def ours(spans: list[Span], _metrics: object) -> list[Span] | None:
        found = [s for s in spans if s.resource.get("service.name") == service and s.scope == "otel_resilience.targets"]
        return found if len(found) >= count else None

    return collector.wait_for(f"{count} spans of {service}", ours)


def assert_operations(spans: list[Span], attempts_per_operation: list[int]) -> None:
    """Exactly one operation span per retried call, with its attempts as children: each failed attempt but the last
    has ConnectionError and a measured delay."""
    operations = sorted((s for s in spans if s.name == "retry unstable_service"), key=lambda s: s.attributes["retry.attempts"])
    attempts = [s for s in spans if s.name == "unstable_service"]
    assert len(spans) == len(operations) + len(attempts)
    assert [op.attributes["retry.attempts"] for op in operations] == attempts_per_operation
    for op, count in zip(operations, attempts_per_operation, strict=True):
        assert op.kind == "SPAN_KIND_INTERNAL" and op.parent_id == ""
        assert {k: v for k, v in op.attributes.items() if k != "retry.total_delay"} == {
            "retry.name": "__main__.unstable_service",
            "retry.attempts": count,
            "retry.result": "success",
            "retry.depth": 1,
        }
        assert isinstance(op.attributes["retry.total_delay"], float)
        mine = sorted((a for a in attempts if a.parent_id == op.span_id), key=lambda a: a.attributes["retry.attempt"])
        assert [a.attributes["retry.attempt"] for a in mine] == list(range(1, count + 1))
        assert all(a.trace_id == op.trace_id for a in mine)
        assert [a.attributes.get("error.type") for a in mine] == ["ConnectionError"] * (count - 1) + [None]
        assert ["retry.delay" in a.attributes for a in mine] == [True] * (count - 1) + [False]
        assert [[e.name for e in a.events] for a in mine] == [["exception"]] * (count - 1) + [[]]
    assert sum(attempts_per_operation) == len(attempts)


def _stderr_without_launcher_noise(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if line.startswith("otel_resilience"))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_launcher_traces_the_scripts_own_class(
    tmp_path: Path, collector: RotelCollector, expected_output: str, spelling: str, layout: str
) -> None:
    app = write_app(tmp_path, layout)
    service = f"launcher-{spelling.partition(':')[0]}-{layout}"
    result = checked(
        run([str(LAUNCHER), sys.executable, str(app)], {**otlp_env(collector.grpc_endpoint, service), RETRY_TARGETS_ENV: spelling})
    )
    assert result.stdout == expected_output
    assert _stderr_without_launcher_noise(result.stderr) == ""
    assert_operations(_service_spans(collector, service, 9), [1, 2, 3])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_setup_at_the_top_of_the_script_traces_its_class(
    tmp_path: Path, collector: RotelCollector, expected_output: str, spelling: str, layout: str
) -> None:
    """``setup()`` runs before the class exists: the target is accepted (not "no attribute"), and patched when the
    class statement runs."""
    prelude = f"import otel_resilience\n\notel_resilience.setup(retry_targets=[{spelling!r}])\n"
    app = write_app(tmp_path, layout, prelude=prelude)
    service = f"setup-{spelling.partition(':')[0]}-{layout}"
    result = checked(run([sys.executable, str(app)], otlp_env(collector.grpc_endpoint, service)))
    assert result.stdout == expected_output
    assert _stderr_without_launcher_noise(result.stderr) == ""
    assert_operations(_service_spans(collector, service, 9), [1, 2, 3])


@pytest.mark.parametrize("spelling", ["app:retry_call", "__main__:retry_call"])
def test_python_dash_m_traces_the_scripts_module_level_function(
    tmp_path: Path, collector: RotelCollector, expected_output: str, spelling: str
) -> None:
    """Run as a module, the script is compiled by the import system: its module-level function is patched at its
    ``def``, before the code below it calls it. Classes and the function together."""
    write_app(tmp_path, "main-guarded")
    service = f"dash-m-{spelling.partition(':')[0]}"
    env = {
        **otlp_env(collector.grpc_endpoint, service),
        "PYTHONPATH": str(tmp_path),
        RETRY_TARGETS_ENV: f"{spelling},{spelling.replace('retry_call', 'Retrier.execute')}",
    }
    result = checked(run([str(LAUNCHER), sys.executable, "-m", "app"], env))
    assert result.stdout == expected_output
    assert _stderr_without_launcher_noise(result.stderr) == ""
    assert_operations(_service_spans(collector, service, 13), [1, 2, 3, 4])


def test_a_scripts_module_level_function_is_reported_with_what_to_do(tmp_path: Path, expected_output: str) -> None:
    """``python app.py`` compiles and runs the script before any hook could see its ``def``: said once, at exit."""
    app = write_app(tmp_path, "module-level")
    env = clean_env(OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    result = checked(run([str(LAUNCHER), sys.executable, str(app)], {**env, RETRY_TARGETS_ENV: "app:retry_call"}))
    assert result.stdout.startswith(expected_output)  # then the console exporter's output, if any: nothing here
    assert _stderr_without_launcher_noise(result.stderr) == (
        "otel_resilience: retry target app:retry_call was never found, so it was not traced: retry_call is a "
        "module-level function of the script, which Python compiles and runs before any hook can patch a function "
        "of it; run the script as a module (python -m app), or move retry_call into a module the script imports, or "
        "make it a method of a class (classes of a script are patched when defined)"
    )


@pytest.mark.parametrize(
    ("target", "advice"),
    [
        ("app:Nope.execute", "app never defined Nope.execute: check the qualified name (Class.method or function)"),
        (
            "myapp:Retrier.execute",
            "module myapp was never imported; the program ran {app} as __main__: name its code "
            "__main__:Retrier.execute or app:Retrier.execute; or check the module name (as you would import it)",
        ),
    ],
)
def test_a_target_never_found_is_reported_once_at_exit(tmp_path: Path, expected_output: str, target: str, advice: str) -> None:
    app = write_app(tmp_path, "main-guarded")
    env = clean_env(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    result = checked(run([str(LAUNCHER), sys.executable, str(app)], {**env, RETRY_TARGETS_ENV: target}))
    assert result.stdout == expected_output
    assert _stderr_without_launcher_noise(result.stderr) == (
        f"otel_resilience: retry target {target} was never found, so it was not traced: " + advice.format(app=app)
    )


def test_a_class_named_as_target_in_the_script_is_accepted_then_reported_when_defined(tmp_path: Path, expected_output: str) -> None:
    """The check at start-up cannot know what ``__main__:Retrier`` will be; the class statement tells."""
    app = write_app(tmp_path, "module-level", prelude="import otel_resilience\notel_resilience.setup(exporter='none', retry_targets=['__main__:Retrier'])\n")
    result = checked(run([sys.executable, str(app)], clean_env(OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")))
    assert result.stdout == expected_output
    assert _stderr_without_launcher_noise(result.stderr) == (
        "otel_resilience: not tracing __main__:Retrier (class __main__.Retrier defined): __main__.Retrier is a class: "
        "name the function or method that does the work (module:Class.method)"
    )


def test_diagnostics_list_the_configured_targets(tmp_path: Path) -> None:
    write_app(tmp_path, "module-level")
    env = clean_env(
        PYTHONPATH=str(tmp_path),
        OTEL_PYTHON_RESILIENCE_RETRY_TARGETS="app:Retrier.execute,app:Nope.execute,__main__:Retrier.execute",
        OTEL_PYTHON_RESILIENCE_BREAKER_TARGETS="nowhere:Breaker.call@state",
    )
    output = checked(run([sys.executable, "-m", "otel_resilience"], env)).stdout
    targets = output[output.index("targets (") :].splitlines()[1:]
    assert targets == [
        f"  retry    app:Retrier.execute  ({RETRY_TARGETS_ENV})  found: yes  defined at {tmp_path / 'app.py'}:11",
        f"  retry    app:Nope.execute  ({RETRY_TARGETS_ENV})  found: no  {tmp_path / 'app.py'} defines no Nope.execute",
        f"  retry    __main__:Retrier.execute  ({RETRY_TARGETS_ENV})  found: -  in the program's script: checked when it runs",
        "  breaker  nowhere:Breaker.call@state  (OTEL_PYTHON_RESILIENCE_BREAKER_TARGETS)  found: no  module nowhere not "
        "found on the import path (run this from where the app runs)",
    ]
