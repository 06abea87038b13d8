"""Running Python (and the ``opentelemetry-instrument`` launcher) in a child process, for what must start from a
process whose OpenTelemetry globals are still unset: `setup()` configuring providers, the launcher, the demo."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "examples" / "service.py"
LAUNCHER = Path(sys.executable).parent / "opentelemetry-instrument"
HANG_GUARD = 180.0
"""Seconds after which a child is considered hung (a failure, never a timing measurement)."""


def clean_env(**overrides: str) -> dict[str, str]:
    """This environment without any ``OTEL_*`` variable (and without colour), plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k not in ("FORCE_COLOR", "NO_COLOR")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def otlp_env(endpoint: str, service: str, protocol: str = "grpc") -> dict[str, str]:
    """A clean environment (`clean_env`) that exports traces and metrics, no logs, over OTLP `protocol` to `endpoint`,
    as the service `service`: what the end-to-end tests give an app sending to their collector."""
    return clean_env(
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="otlp",
        OTEL_LOGS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME=service,
    )


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `command` from the repository root; fails the test with its output when it hangs."""
    try:
        return subprocess.run(
            command, cwd=ROOT, env=env if env is not None else clean_env(), capture_output=True, text=True,
            timeout=HANG_GUARD,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{command} did not finish within {HANG_GUARD} s; output so far: {exc.output!r}") from exc


def run_python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the (dedented) `code` in a fresh interpreter."""
    return run([sys.executable, "-c", textwrap.dedent(code), *args], env)


def checked(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    """`result`, after asserting the child exited 0 (showing its output when it did not)."""
    assert result.returncode == 0, f"exit code {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result
