"""Tracing leaves the app's global `random` alone: the seed program prints the same lines traced and untraced, and
the id generator we give providers is random, private and seeded from the OS."""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk._configuration import _import_id_generator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

import otel_resilience
from otel_resilience._setup.ids import PrivateRandomIdGenerator, draws_from_global_random, use_private_ids
from tests.support.processes import LAUNCHER, checked, clean_env, run, run_python

SEED = Path(__file__).resolve().parent / "seed"
SEED_PROGRAM = SEED / "seed_main.py"
TARGET = "seed_retrier:Retrier.execute"
APP_LINE_STARTS = ("Attempt ", "Result: ", "Final failure: ")
CONSOLE = {"OTEL_TRACES_EXPORTER": "resilience_console", "OTEL_METRICS_EXPORTER": "resilience_console",
           "OTEL_LOGS_EXPORTER": "none"}


def _app_lines(stdout: str) -> list[str]:
    """The seed program's own lines (the console view prints trees and the summary around them)."""
    return [line for line in stdout.splitlines() if line.startswith(APP_LINE_STARTS)]


def _operation_spans(stdout: str) -> int:
    """Retry operation spans the console view printed for the seed program's retried call."""
    return sum(1 for line in stdout.splitlines() if line.startswith("retry main.<locals>.call_service "))


def _seed_run(mode: str, *, launcher: bool = False, **env: str) -> str:
    command = [sys.executable, str(SEED_PROGRAM)]
    if launcher:
        command = [str(LAUNCHER), *command]
    return checked(run(command, clean_env(SEED_MODE=mode, **env))).stdout


@pytest.fixture(scope="module")
def untraced() -> list[str]:
    lines = _app_lines(_seed_run("plain"))
    # The program draws from `random` at every attempt: 6 requests, some retried, some exhausted.
    assert any(line.startswith("Final failure") for line in lines) and len(lines) > 6
    return lines


def test_with_setup_the_seed_program_prints_the_same_lines(untraced: list[str]) -> None:
    stdout = _seed_run("setup", **CONSOLE)
    assert _app_lines(stdout) == untraced
    assert _operation_spans(stdout) == 6


def test_under_the_launcher_the_seed_program_prints_the_same_lines(untraced: list[str]) -> None:
    stdout = _seed_run("plain", launcher=True, OTEL_PYTHON_RESILIENCE_RETRY_TARGETS=TARGET, **CONSOLE)
    assert _app_lines(stdout) == untraced
    assert _operation_spans(stdout) == 6


def test_with_the_app_s_own_provider_and_our_generator_the_seed_program_prints_the_same_lines(
    untraced: list[str],
) -> None:
    stdout = _seed_run("app_provider", OTEL_METRICS_EXPORTER="resilience_console")
    assert _app_lines(stdout) == untraced
    assert _operation_spans(stdout) == 6


def test_the_sdk_s_default_generator_would_change_the_seed_program(untraced: list[str]) -> None:
    """The contrast that shows the three tests above can fail: ids from the global `random` change the output."""
    chosen = _seed_run("plain", launcher=True, OTEL_PYTHON_RESILIENCE_RETRY_TARGETS=TARGET,
                       OTEL_PYTHON_ID_GENERATOR="random", **CONSOLE)
    assert _app_lines(chosen) != untraced
    assert _operation_spans(chosen) > 0


def test_setup_says_what_to_do_with_an_app_provider_that_draws_from_the_global_random(untraced: list[str]) -> None:
    result = checked(run([sys.executable, str(SEED_PROGRAM)],
                         clean_env(SEED_MODE="app_provider_default", OTEL_METRICS_EXPORTER="none")))
    assert _app_lines(result.stdout) != untraced
    assert result.stderr.count("draws span ids from the global random module") == 1
    assert "id_generator=otel_resilience.PrivateRandomIdGenerator()" in result.stderr


def test_ids_are_random_and_never_draw_from_the_global_random() -> None:
    random.seed(1234)
    before = random.getstate()
    generator = PrivateRandomIdGenerator()
    trace_ids = {generator.generate_trace_id() for _ in range(1000)}
    span_ids = {generator.generate_span_id() for _ in range(1000)}
    assert random.getstate() == before
    assert len(trace_ids) == 1000 and len(span_ids) == 1000
    assert max(trace_ids) >= 1 << 120 and max(span_ids) >= 1 << 56  # the full width is used
    assert generator.is_trace_id_random()


def test_ids_are_seeded_from_the_os_not_from_a_constant() -> None:
    code = "from otel_resilience._setup.ids import PrivateRandomIdGenerator as G; print(G().generate_trace_id())"
    first = checked(run_python(code)).stdout
    second = checked(run_python(code)).stdout
    assert first != second


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    generator = PrivateRandomIdGenerator()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: write its next id and leave at once
        os.write(write, str(generator.generate_span_id()).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child_id = int(pipe.read())
    assert generator.generate_span_id() != child_id


def test_the_launcher_s_default_provider_gets_our_generator_unless_the_user_chose_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_PYTHON_ID_GENERATOR", raising=False)
    provider = TracerProvider()
    assert draws_from_global_random(provider)
    use_private_ids(provider)
    assert isinstance(provider.id_generator, PrivateRandomIdGenerator)
    assert not draws_from_global_random(provider)

    chosen = TracerProvider()
    monkeypatch.setenv("OTEL_PYTHON_ID_GENERATOR", "random")
    use_private_ids(chosen)
    assert type(chosen.id_generator) is RandomIdGenerator


def test_an_id_generator_the_app_chose_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_PYTHON_ID_GENERATOR", raising=False)

    class AppIds(RandomIdGenerator):
        pass

    provider = TracerProvider(id_generator=AppIds())
    use_private_ids(provider)
    assert type(provider.id_generator) is AppIds


def test_the_id_generator_entry_point_and_the_public_name() -> None:
    assert isinstance(_import_id_generator("resilience_random"), PrivateRandomIdGenerator)
    assert otel_resilience.PrivateRandomIdGenerator is PrivateRandomIdGenerator


def test_breaker_counters_in_the_app_s_spans_leave_the_global_random_alone() -> None:
    """The SDK's default exemplar reservoir for counters samples with the global `random` when a sampled span is in
    the measurement's context. The breaker counters (calls and transitions) are recorded in a context with no span, so
    they draw nothing, with setup()'s meter provider (which keeps the last measurement anyway) and with the SDK's
    default views alike. The contrast: the app's own counter, added the same way in the same span, draws."""
    code = """
        import random, sys
        import otel_resilience, pybreaker
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider

        if sys.argv[1] != "setup":
            trace.set_tracer_provider(TracerProvider(id_generator=otel_resilience.PrivateRandomIdGenerator()))
            metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
        otel_resilience.setup(exporter="console" if sys.argv[1] == "setup" else "none", libraries=["pybreaker"])
        app_counter = metrics.get_meter("app").create_counter("app.calls")
        breaker = pybreaker.CircuitBreaker(fail_max=100, name="payments")
        random.seed(7)
        before = random.getstate()
        with trace.get_tracer("app").start_as_current_span("POST /payments"):
            for _ in range(5):
                breaker.call(lambda: None)
                if sys.argv[1] == "app-counter":
                    app_counter.add(1)
            breaker.open()
            breaker.close()
        print("untouched" if random.getstate() == before else "drawn")
    """
    with_setup = checked(run_python(code, "setup")).stdout.splitlines()
    assert "untouched" in with_setup and "drawn" not in with_setup
    assert "trace " in with_setup[0]  # the console view printed the request's tree: spans were made
    assert checked(run_python(code, "sdk-default-views")).stdout.splitlines() == ["untouched"]
    assert checked(run_python(code, "app-counter")).stdout.splitlines() == ["drawn"]


def test_the_exemplar_views_still_keep_exemplars() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from otel_resilience._setup.ids import exemplar_views

    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], views=exemplar_views())
    tracer = TracerProvider(id_generator=PrivateRandomIdGenerator()).get_tracer("app")
    counter = meter_provider.get_meter("m").create_counter("calls")
    histogram = meter_provider.get_meter("m").create_histogram("attempts", explicit_bucket_boundaries_advisory=[1, 2])
    random.seed(3)
    before = random.getstate()
    with tracer.start_as_current_span("request") as span:
        for value in (1, 2, 3):
            counter.add(value)
            histogram.record(value)
    assert random.getstate() == before
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        m.name: m.data.data_points[0] for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    (exemplar,) = points["calls"].exemplars
    assert (exemplar.value, exemplar.span_id) == (3, span.get_span_context().span_id)
    assert len(points["attempts"].exemplars) == 3  # one per bucket, as the SDK's own histogram reservoir keeps
    meter_provider.shutdown()
