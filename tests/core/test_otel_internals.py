"""The private OpenTelemetry names core/telemetry.py reads, checked on the installed API and SDK, so that a release that
renames them fails here, loudly, rather than leaving every app untraced in silence; and the installed versions lie in
the range pyproject.toml declares."""

from __future__ import annotations

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

from tests.support.processes import checked, run_python

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
