"""The private OpenTelemetry names core/telemetry.py reads, checked on the installed API and SDK, so that a release that
renames them fails here, loudly, rather than leaving every app untraced in silence; and the installed versions lie in
the range pyproject.toml declares."""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from tests.support.processes import checked, clean_env, run, run_python

ROOT = Path(__file__).resolve().parents[2]

# In a fresh interpreter: global providers are set once per process.
PROBE = """
from opentelemetry import metrics, trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
from opentelemetry.instrumentation.utils import _SUPPRESS_INSTRUMENTATION_KEY_PLAIN
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from otel_resilience.core.telemetry import Telemetry, _sdk_configured

assert trace._TRACER_PROVIDER is None and metrics_internal._METER_PROVIDER is None, "no provider set yet"
tracer, meter = trace.get_tracer("probe"), metrics.get_meter("probe")
assert isinstance(tracer, trace.ProxyTracer) and isinstance(tracer._tracer, trace.NoOpTracer)
assert hasattr(meter, "_real_meter") and meter._real_meter is None
assert not _sdk_configured(tracer, meter, uses_globals=False)  # reads the proxies' private names too
telemetry = Telemetry("probe")
assert not telemetry.recording()
trace.set_tracer_provider(TracerProvider())
metrics.set_meter_provider(MeterProvider())
assert trace._TRACER_PROVIDER is not None and metrics_internal._METER_PROVIDER is not None
assert not isinstance(tracer._tracer, trace.NoOpTracer)
meter.create_counter("resolves")  # the proxy meter resolves its real meter on use
assert meter._real_meter is not None and _sdk_configured(tracer, meter, uses_globals=False)
assert telemetry.recording()
assert _SUPPRESS_INSTRUMENTATION_KEY and _SUPPRESS_INSTRUMENTATION_KEY_PLAIN
print("ok")
"""


def test_the_private_names_we_read_exist_and_mean_what_we_read() -> None:
    assert checked(run_python(PROBE)).stdout.strip().endswith("ok")


def test_the_installed_api_and_sdk_are_in_the_declared_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["otlp"]]
    ranges = {r.name: r.specifier for r in declared if r.name in ("opentelemetry-api", "opentelemetry-sdk")}
    assert set(ranges) == {"opentelemetry-api", "opentelemetry-sdk"}
    for name, specifier in ranges.items():
        assert specifier.contains(version(name)), f"{name} {version(name)} is outside the declared {specifier}"
        assert any(spec.operator == "<" for spec in specifier), f"{name}: the range names no upper bound"


def _lowest(requirement: Requirement) -> str:
    """The lowest release a ``>=`` requirement admits, as a pip pin."""
    (floor,) = [spec.version for spec in requirement.specifier if spec.operator == ">="]
    return f"{requirement.name}=={floor}"


def test_the_private_names_exist_at_the_lowest_declared_api_and_sdk(tmp_path: Path) -> None:
    """The probe again, on the oldest API, SDK and instrumentation releases pyproject.toml admits (from PyPI, put
    ahead of the environment's own on the path): the declared range is the range this test covers, both ends."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["otlp"]]
    wanted = ("opentelemetry-api", "opentelemetry-sdk", "opentelemetry-instrumentation", "opentelemetry-semantic-conventions")
    pins = [_lowest(r) for r in declared if r.name in wanted]
    assert len(pins) == len(wanted), pins
    target = tmp_path / "lowest"
    checked(run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), *pins], None))
    env = {**clean_env(), "PYTHONPATH": str(target)}
    probe = "import opentelemetry.version as v\nprint(v.__version__)\n" + PROBE
    lines = checked(run_python(probe, env=env)).stdout.split()
    assert Version(lines[0]) == Version(pins[0].split("==")[1]) and lines[-1] == "ok", lines
