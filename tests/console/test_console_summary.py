"""The console view's metrics: one aligned summary per retry and per breaker, printed once when the program ends, by
`setup(exporter="console")` and by the launcher with ``OTEL_METRICS_EXPORTER=resilience_console``."""

from __future__ import annotations

import io
import re
import socket
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points

import pybreaker
import pytest
import tenacity
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from otel_resilience._setup.ids import PrivateRandomIdGenerator
from otel_resilience.console_summary import ConsoleSummaryMetricReader
from otel_resilience.instrumentation.pybreaker import PyBreakerInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from tests.support.processes import LAUNCHER, SERVICE, checked, clean_env, run

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def recorded() -> Iterator[tuple[MeterProvider, Terminal]]:
    """Real tenacity and pybreaker calls, instrumented, into a meter provider whose only reader is the summary."""
    out = Terminal()
    meter_provider = MeterProvider(metric_readers=[ConsoleSummaryMetricReader(out=out)])
    tracer_provider = TracerProvider(id_generator=PrivateRandomIdGenerator())
    kwargs = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
    TenacityInstrumentor().instrument(**kwargs)
    PyBreakerInstrumentor().instrument(**kwargs)
    try:
        calls = {"n": 0}

        @tenacity.retry(stop=tenacity.stop_after_attempt(3), reraise=True)
        def flaky_lookup() -> str:
            calls["n"] += 1
            if calls["n"] % 4 in (1, 2):
                raise ConnectionError("down")
            return "ok"

        @tenacity.retry(stop=tenacity.stop_after_attempt(2), reraise=True)
        def always_down() -> str:
            raise TimeoutError("still down")

        breaker = pybreaker.CircuitBreaker(fail_max=2, name="payments")

        def charge() -> None:
            raise OSError("gateway")

        assert flaky_lookup() == "ok"
        with pytest.raises(TimeoutError):
            always_down()
        for _ in range(4):  # a failure, the failure that opens it, two calls rejected while open
            with pytest.raises((OSError, pybreaker.CircuitBreakerError)):
                breaker.call(charge)
    finally:
        TenacityInstrumentor().uninstrument()
        PyBreakerInstrumentor().uninstrument()
    yield meter_provider, out
    meter_provider.shutdown()


def _rows(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in ANSI.sub("", text).splitlines() if line.strip()}


def test_one_summary_at_shutdown_not_at_each_flush(recorded: tuple[MeterProvider, Terminal]) -> None:
    meter_provider, out = recorded
    assert meter_provider.force_flush()
    assert out.getvalue() == ""
    meter_provider.shutdown()
    text = out.getvalue()
    assert text.count("otel_resilience summary") == 1
    meter_provider.shutdown()
    assert out.getvalue() == text


def test_the_summary_counts_operations_by_result_attempts_calls_and_transitions(
    recorded: tuple[MeterProvider, Terminal],
) -> None:
    meter_provider, out = recorded
    meter_provider.shutdown()
    rows = _rows(out.getvalue())
    name = "tests.console.test_console_summary.recorded.<locals>"
    assert rows["retries"] == ["retries", "operations", "success", "exhausted", "attempts"]
    assert rows[f"{name}.flaky_lookup"][1:] == ["1", "1", "0", "3"]
    assert rows[f"{name}.always_down"][1:] == ["1", "0", "1", "2"]
    assert rows["breakers"] == ["breakers", "state", "calls", "success", "failure", "rejected", "transitions"]
    assert rows["payments"][1:] == ["open", "4", "0", "2", "2", "1", "(closed→open)"]


def test_columns_are_aligned_and_coloured_on_a_terminal(recorded: tuple[MeterProvider, Terminal]) -> None:
    meter_provider, out = recorded
    meter_provider.shutdown()
    text = out.getvalue()
    assert "\x1b[31m" in text and "\x1b[32m" in text  # failures red, successes green
    lines = ANSI.sub("", text).splitlines()
    retries = lines[lines.index(next(line for line in lines if line.startswith("retries"))):]
    table = retries[: retries.index("")]
    ends = {len(line) for line in table}
    assert len(ends) == 1, table  # right-aligned numbers: every row ends under the header's last column


def test_no_colour_off_a_terminal() -> None:
    out = io.StringIO()
    provider = MeterProvider(metric_readers=[ConsoleSummaryMetricReader(out=out)])
    provider.shutdown()
    assert out.getvalue() == "otel_resilience summary: no retries or circuit breakers were recorded\n"


def test_registered_as_the_resilience_console_metrics_exporter() -> None:
    (entry_point,) = entry_points(group="opentelemetry_metrics_exporter", name="resilience_console")
    assert entry_point.load() is ConsoleSummaryMetricReader


@pytest.fixture
def silent_collector_port() -> Iterator[socket.socket]:
    """A port that accepts connections and never answers: any OTLP export attempt would be seen here (and wait)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock


def test_the_launcher_with_both_console_exporters_prints_trees_and_summary_and_exports_nothing(
    silent_collector_port: socket.socket,
) -> None:
    port = silent_collector_port.getsockname()[1]
    env = clean_env(
        OTEL_TRACES_EXPORTER="resilience_console",
        OTEL_METRICS_EXPORTER="resilience_console",
        # Were anything exported over OTLP (metrics by default, or logs), it would go here and wait on this port.
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
    )
    result = checked(run([str(LAUNCHER), sys.executable, str(SERVICE)], env))
    with pytest.raises(BlockingIOError):
        silent_collector_port.accept()  # nobody connected: no export was attempted, so none can time out
    assert "Traceback" not in result.stderr and "Failed to export" not in result.stderr, result.stderr
    assert "UNAVAILABLE" not in result.stdout + result.stderr
    lines = result.stdout.splitlines()
    summary_at = lines.index("otel_resilience summary")
    assert max(i for i, line in enumerate(lines) if line.startswith("trace ")) < summary_at  # trees first
    rows = _rows("\n".join(lines[summary_at:]))
    assert rows["__main__.fetch_user"][1:] == ["2", "1", "1", "7"]
    assert rows["payments"][1:5] == ["closed", "5", "1", "3"]
    assert rows["payments"][5:7] == ["1", "3"]  # one rejected, three transitions
    assert "(closed→open, open→half_open, half_open→closed)" in result.stdout
