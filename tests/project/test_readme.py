"""The README's three ways in work as written: its files saved as they are, its commands run as they are, in a fresh
directory with this environment's ``python`` and ``opentelemetry-instrument`` first on PATH."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import HANG_GUARD, ROOT, clean_env

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", README, flags=re.DOTALL)


def _file(name: str) -> str:
    """The Python block the README introduces as the file `name` (its first line is ``# name``)."""
    (text,) = [body for language, body in BLOCKS if language == "python" and body.startswith(f"# {name}\n")]
    return text


def _setup_lines(call: str) -> str:
    """The README's lines that add `setup()` to a file, found by the call they make."""
    (text,) = [body for language, body in BLOCKS if language == "python" and call in body and body.count("\n") < 5]
    return text


def _command(start: str) -> str:
    """The README's bash command that starts with `start` (continuation lines joined as the shell would)."""
    commands = [body for language, body in BLOCKS if language == "bash" and body.startswith(start)]
    assert len(commands) == 1, f"the README has {len(commands)} bash blocks starting with {start!r}"
    return commands[0].replace("\\\n", " ").strip()


def _shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=HANG_GUARD)
    assert result.returncode == 0, f"{command}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr and "Failed to export" not in result.stderr, result.stderr
    return result


def _summary_rows(stdout: str) -> dict[str, list[str]]:
    lines = stdout.splitlines()
    return {line.split()[0]: line.split() for line in lines[lines.index("otel_resilience summary") + 1:] if line}


APP_OUTPUT = [
    "{'id': 1}",
    "charge 10: TimeoutError",
    "charge 20: CircuitBreakerError",
    "charge 30: CircuitBreakerError",
]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(_file("app.py"))
    return tmp_path


def _check_app_run(stdout: str) -> None:
    assert [line for line in stdout.splitlines() if line in APP_OUTPUT] == APP_OUTPUT
    assert "retry fetch_user" in stdout and stdout.count("circuitbreaker payments") == 3  # the trees
    rows = _summary_rows(stdout)
    assert rows["__main__.fetch_user"][1:] == ["1", "1", "3"]
    assert rows["payments"][1:] == ["open", "3", "0", "2", "1", "1", "(closed→open)"]


def test_the_launcher_example(app: Path) -> None:
    command = _command("OTEL_TRACES_EXPORTER=resilience_console OTEL_METRICS_EXPORTER=resilience_console "
                       "opentelemetry-instrument python app.py")
    _check_app_run(_shell(command, app).stdout)


def test_the_setup_example(app: Path) -> None:
    lines = _setup_lines('otel_resilience.setup(exporter="console")')
    (app / "app.py").write_text(lines + "\n" + _file("app.py"))
    _check_app_run(_shell("python app.py", app).stdout)


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    (tmp_path / "shop.py").write_text(_file("shop.py"))
    return tmp_path


def _check_shop_run(stdout: str) -> None:
    assert "cart 7" in stdout.splitlines()
    assert "retry load_cart" in stdout
    assert _summary_rows(stdout)["__main__.load_cart"][1:] == ["1", "1", "2"]


def test_the_targets_example_under_the_launcher(shop: Path) -> None:
    _check_shop_run(_shell(_command("OTEL_PYTHON_RESILIENCE_RETRY_TARGETS=shop:Retrier.execute"), shop).stdout)


def test_the_targets_example_with_setup(shop: Path) -> None:
    lines = _setup_lines('otel_resilience.setup(exporter="console", retry_targets=["__main__:Retrier.execute"])')
    (shop / "shop.py").write_text(lines + "\n" + _file("shop.py"))
    _check_shop_run(_shell("python shop.py", shop).stdout)


def test_the_readme_shows_the_demo_s_real_summary() -> None:
    from tests.end_to_end.test_end_to_end import DEMO_CONSOLE

    summary = DEMO_CONSOLE[DEMO_CONSOLE.index("otel_resilience summary"):]
    assert f"```\n{summary}```" in README


def test_no_issue_numbers_and_no_design_document_in_user_docs() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        # Our own issues are never cited ("issue 5"); upstream ones are, by repository ("contrib issue #2000").
        assert not re.search(r"\bissues? \d", text, flags=re.IGNORECASE), path
        assert "DESIGN" not in text, path
