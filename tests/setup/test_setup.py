"""`otel_resilience.setup()`: providers used or configured, exporters chosen by arguments then OTEL_* variables,
idempotence, what it instruments, settings, every ValueError, a missing SDK, a collector that is down or hangs.

What must start from unset OpenTelemetry globals runs in a child process (globals can be set once per process);
the rest runs here with the `otel` fixture's providers passed explicitly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pybreaker
import pytest
import tenacity
from opentelemetry import trace
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.trace import StatusCode

import otel_resilience
from otel_resilience import _setup
from otel_resilience.core.config import SETTINGS
from otel_resilience.instrumentation.pybreaker import PyBreakerInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from tests.conftest import Otel
from tests.support.processes import LAUNCHER, checked, clean_env, run, run_python

PATCHED_CLASSES = (tenacity.BaseRetrying, tenacity.Retrying, tenacity.AsyncRetrying, pybreaker.CircuitBreaker)


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No OTEL_* variable, no earlier setup(); afterwards undo what setup() patched and restore the settings."""
    for variable in [v for v in os.environ if v.startswith("OTEL_")]:
        monkeypatch.delenv(variable)
    assert _setup._HANDLE is None
    saved = (SETTINGS.attempt_spans, SETTINGS.stacktraces)
    yield
    if _setup._HANDLE is not None:
        _setup._HANDLE.uninstrument()
    SETTINGS.attempt_spans, SETTINGS.stacktraces = saved


def _flaky(failures: int) -> Any:
    calls = {"n": 0}

    @tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none())
    def fetch() -> str:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise ConnectionError("down")
        return "ok"

    return fetch


def _class_dicts() -> list[dict[str, Any]]:
    return [dict(vars(cls)) for cls in PATCHED_CLASSES]


# --- in this process, with explicit providers ----------------------------------------------------------------------


def test_setup_uses_given_providers_and_instruments_tenacity_and_pybreaker(fresh: None, otel: Otel) -> None:
    handle = otel_resilience.setup(**otel.kwargs(), libraries=["tenacity", "pybreaker"])

    assert handle.tracer_provider is otel.tracer_provider
    assert handle.meter_provider is otel.meter_provider
    assert (handle.owns_tracer_provider, handle.owns_meter_provider) == (False, False)
    assert handle.instrumented == ("resilience_tenacity", "resilience_pybreaker")
    assert _flaky(1)() == "ok"
    breaker = pybreaker.CircuitBreaker(name="setup-test")
    assert breaker.call(lambda: 42) == 42

    operation = otel.span("retry _flaky.<locals>.fetch")
    assert operation.instrumentation_scope.name == "otel_resilience.tenacity"
    assert operation.attributes["retry.attempts"] == 2
    assert operation.attributes["retry.result"] == "success"
    attempts = [s for s in otel.spans() if s.name == "_flaky.<locals>.fetch"]
    assert [a.attributes["retry.attempt"] for a in attempts] == [1, 2]
    assert all(a.parent.span_id == operation.context.span_id for a in attempts)
    assert attempts[0].status.status_code is StatusCode.ERROR
    call = otel.span("circuitbreaker setup-test")
    assert call.instrumentation_scope.name == "otel_resilience.pybreaker"
    assert call.attributes["circuitbreaker.result"] == "success"
    assert call.attributes["circuitbreaker.state"] == "closed"


def test_second_call_returns_the_same_handle_and_changes_nothing(fresh: None, otel: Otel) -> None:
    first = otel_resilience.setup(**otel.kwargs(), libraries=["tenacity"])
    second = otel_resilience.setup(exporter="console", libraries=["pybreaker"])

    assert second is first
    assert first.instrumented == ("resilience_tenacity",)
    assert not PyBreakerInstrumentor().is_instrumented_by_opentelemetry


def test_a_second_call_still_rejects_wrong_input(fresh: None, otel: Otel) -> None:
    otel_resilience.setup(**otel.kwargs(), libraries=["tenacity"])
    with pytest.raises(ValueError, match="exporter: 'jaeger'"):
        otel_resilience.setup(exporter="jaeger")


def test_uninstrument_restores_every_original_and_a_later_setup_starts_afresh(fresh: None, otel: Otel) -> None:
    before = _class_dicts()
    handle = otel_resilience.setup(**otel.kwargs(), libraries=["tenacity", "pybreaker"])
    during = _class_dicts()
    assert any(
        during_dict[name] is not before_dict[name]
        for before_dict, during_dict in zip(before, during)
        for name in before_dict
    ), "setup() patched nothing on tenacity's or pybreaker's classes"

    handle.uninstrument()

    for before_dict, after_dict in zip(before, _class_dicts()):
        assert after_dict.keys() == before_dict.keys()
        assert all(after_dict[name] is before_dict[name] for name in before_dict)
    assert handle.instrumented == ()
    assert _flaky(0)() == "ok"
    assert otel.spans() == []
    again = otel_resilience.setup(**otel.kwargs(), libraries=["tenacity"])
    assert again is not handle
    assert again.instrumented == ("resilience_tenacity",)


def test_an_instrumentor_switched_on_before_setup_is_left_to_its_owner(fresh: None, otel: Otel) -> None:
    TenacityInstrumentor().instrument(**otel.kwargs())
    try:
        handle = otel_resilience.setup(**otel.kwargs(), libraries=["tenacity", "pybreaker"])
        assert handle.instrumented == ("resilience_pybreaker",)
        handle.uninstrument()
        assert TenacityInstrumentor().is_instrumented_by_opentelemetry
        assert not PyBreakerInstrumentor().is_instrumented_by_opentelemetry
    finally:
        TenacityInstrumentor().uninstrument()


@pytest.mark.parametrize(
    ("libraries", "expected"),
    [
        (["tenacity"], ("resilience_tenacity",)),
        (["resilience_pybreaker"], ("resilience_pybreaker",)),
        (["pybreaker", "tenacity", "pybreaker"], ("resilience_pybreaker", "resilience_tenacity")),
        ([], ()),
    ],
)
def test_libraries_restricts_what_is_instrumented(
    fresh: None, otel: Otel, libraries: list[str], expected: tuple[str, ...]
) -> None:
    handle = otel_resilience.setup(**otel.kwargs(), libraries=libraries)
    assert handle.instrumented == expected
    assert TenacityInstrumentor().is_instrumented_by_opentelemetry is ("resilience_tenacity" in expected)


@pytest.mark.parametrize(
    ("disabled", "expected"),
    [
        ("resilience_pybreaker", ("resilience_tenacity",)),
        (" resilience_tenacity , resilience_pybreaker ", ()),
        ("*", ()),
        ("requests,resilience_backoff", ("resilience_tenacity", "resilience_pybreaker")),
    ],
)
def test_otel_python_disabled_instrumentations_is_honoured(
    fresh: None, otel: Otel, monkeypatch: pytest.MonkeyPatch, disabled: str, expected: tuple[str, ...]
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", disabled)
    handle = otel_resilience.setup(**otel.kwargs(), libraries=["tenacity", "pybreaker"])

    assert handle.instrumented == expected
    pybreaker.CircuitBreaker(name="maybe-traced").call(lambda: None)
    traced = [s.name for s in otel.spans()]
    assert traced == (["circuitbreaker maybe-traced"] if "resilience_pybreaker" in expected else [])


def _supported_here(name: str) -> bool:
    """The instrumentor loads and the installed library is in its declared range."""
    cls = _setup.load_instrumentor(name)
    return cls is not None and get_dependency_conflicts(cls().instrumentation_dependencies()) is None


def test_setup_without_libraries_instruments_every_installed_supported_library(
    fresh: None, otel: Otel, caplog: pytest.LogCaptureFixture
) -> None:
    expected = tuple(name for name in _setup.INSTRUMENTORS if _supported_here(name))
    with caplog.at_level("WARNING", logger="otel_resilience"):
        handle = otel_resilience.setup(**otel.kwargs())
    # every one of them, in order: an instrumentor that failed (logged and skipped by setup()) fails the test
    assert handle.instrumented == expected
    assert {"resilience_tenacity", "resilience_pybreaker"} <= set(expected)
    logged = [r.getMessage() for r in caplog.records if r.name == "otel_resilience"]
    assert [m for m in logged if any(name in m for name in _setup.INSTRUMENTORS)] == []  # none failed or was refused
    assert all(_setup.load_instrumentor(name)().is_instrumented_by_opentelemetry for name in expected)  # type: ignore[misc]


def test_settings_are_updated_in_place(fresh: None, otel: Otel) -> None:
    settings = SETTINGS
    otel_resilience.setup(**otel.kwargs(), libraries=["tenacity"], attempt_spans=" On_Retry ", stacktraces="none")

    from otel_resilience.core import config

    assert config.SETTINGS is settings
    assert (settings.attempt_spans, settings.stacktraces) == ("on_retry", "none")
    assert _flaky(0)() == "ok"
    assert [s.name for s in otel.spans()] == ["retry _flaky.<locals>.fetch"]  # on_retry: no span for a lone success


def test_settings_default_to_their_environment_variables(
    fresh: None, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_RESILIENCE_ATTEMPT_SPANS", "none")
    monkeypatch.setenv("OTEL_PYTHON_RESILIENCE_STACKTRACES", "all")
    otel_resilience.setup(**otel.kwargs(), libraries=[])
    assert (SETTINGS.attempt_spans, SETTINGS.stacktraces) == ("none", "all")


def test_arguments_win_over_the_settings_variables(fresh: None, otel: Otel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_PYTHON_RESILIENCE_ATTEMPT_SPANS", "none")
    otel_resilience.setup(**otel.kwargs(), libraries=[], attempt_spans="all")
    assert SETTINGS.attempt_spans == "all"


# --- every ValueError, raised before anything is configured or patched -------------------------------------------

BAD_ARGUMENTS = [
    ({"exporter": "jaeger"}, r"exporter: 'jaeger' is not accepted; use one of: 'otlp', 'console', 'none'"),
    ({"exporter": 3}, r"exporter: 3 is not accepted; use one of: 'otlp', 'console', 'none'"),
    ({"protocol": "http"}, r"protocol: 'http' is not an OTLP protocol; use one of: 'grpc', 'http/protobuf'"),
    ({"protocol": "thrift"}, r"protocol: 'thrift' is not an OTLP protocol; use one of: 'grpc', 'http/protobuf'"),
    ({"endpoint": "localhost:4317"}, r"endpoint: 'localhost:4317' is not an OTLP endpoint; use a URL like"),
    ({"endpoint": "http://"}, r"endpoint: 'http://' is not an OTLP endpoint.*scheme http or https, a host"),
    ({"endpoint": "ftp://collector:4317"}, r"endpoint: 'ftp://collector:4317' is not an OTLP endpoint"),
    ({"endpoint": "http://collector:port"}, r"endpoint: 'http://collector:port' is not an OTLP endpoint"),
    ({"endpoint": "http://collector:70000"}, r"endpoint: 'http://collector:70000' is not an OTLP endpoint"),
    ({"endpoint": 4317}, r"endpoint: 4317 is not an OTLP endpoint"),
    ({"service_name": " "}, r"service_name: ' ' is not accepted; give a non-empty string"),
    ({"libraries": ["tenacity", "hystrix"]}, r"libraries: 'hystrix' is not a supported library; accepted names: "
                                             r"'tenacity', 'pybreaker', 'backoff', .*'aiohttp_retry'"),
    ({"libraries": "tenacity"}, r"libraries: give a list of names, not the string 'tenacity'; accepted names: "),
    ({"libraries": [None]}, r"libraries: None is not a supported library; accepted names: 'tenacity'"),
    ({"attempt_spans": "some"}, r"attempt_spans: 'some' is not accepted; use one of: all, on_retry, none"),
    ({"attempt_spans": True}, r"attempt_spans: True is not accepted; use one of: all, on_retry, none"),
    ({"stacktraces": "full"}, r"stacktraces: 'full' is not accepted; use one of: final, all, none"),
    ({"retry_targets": [1]}, r"retry_targets: \[1\] is not accepted; give a list of 'module:Qual.name\[:argname\]'"),
    ({"breaker_targets": 7}, r"breaker_targets: 7 is not accepted; give a list of 'module:Qual.name\[:argname\]'"),
]

BAD_VARIABLES = [
    ({"OTEL_TRACES_EXPORTER": "zipkin_thrift"},
     r"OTEL_TRACES_EXPORTER: 'zipkin_thrift' is not an installed exporter; use one of: 'otlp', 'none', .*'console'"),
    ({"OTEL_METRICS_EXPORTER": "statsd"},
     r"OTEL_METRICS_EXPORTER: 'statsd' is not an installed exporter; use one of: 'otlp', 'none'"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"},
     r"OTEL_EXPORTER_OTLP_PROTOCOL: 'thrift' is not an OTLP protocol; use one of: 'grpc', 'http/protobuf'"),
    ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "json"},
     r"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'json' is not an OTLP protocol"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"},
     r"OTEL_EXPORTER_OTLP_ENDPOINT: 'collector:4317' is not an OTLP endpoint; use a URL like"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http//collector"},
     r"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'http//collector' is not an OTLP endpoint"),
    ({"OTEL_PYTHON_RESILIENCE_ATTEMPT_SPANS": "most"},
     r"OTEL_PYTHON_RESILIENCE_ATTEMPT_SPANS: 'most' is not accepted; use one of: all, on_retry, none"),
    ({"OTEL_PYTHON_RESILIENCE_STACKTRACES": "some"},
     r"OTEL_PYTHON_RESILIENCE_STACKTRACES: 'some' is not accepted; use one of: final, all, none"),
]


def _assert_nothing_happened(global_provider: object) -> None:
    assert _setup._HANDLE is None
    assert trace.get_tracer_provider() is global_provider
    assert not TenacityInstrumentor().is_instrumented_by_opentelemetry
    assert not PyBreakerInstrumentor().is_instrumented_by_opentelemetry


@pytest.mark.parametrize(("arguments", "message"), BAD_ARGUMENTS, ids=[str(a) for a, _ in BAD_ARGUMENTS])
def test_wrong_arguments_raise_value_error_naming_what_is_accepted(
    fresh: None, arguments: dict[str, Any], message: str
) -> None:
    global_provider = trace.get_tracer_provider()
    with pytest.raises(ValueError, match=message):
        otel_resilience.setup(**arguments)
    _assert_nothing_happened(global_provider)


@pytest.mark.parametrize(("variables", "message"), BAD_VARIABLES, ids=[str(v) for v, _ in BAD_VARIABLES])
def test_wrong_variables_raise_value_error_naming_the_variable(
    fresh: None, monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    global_provider = trace.get_tracer_provider()
    with pytest.raises(ValueError, match=message):
        otel_resilience.setup()
    _assert_nothing_happened(global_provider)


def test_endpoint_variables_are_not_checked_when_otlp_is_not_used(
    fresh: None, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "not a url")
    handle = otel_resilience.setup(exporter="none", **otel.kwargs(), libraries=[])
    assert handle.tracer_provider is otel.tracer_provider


# --- in a child process: configuring providers ---------------------------------------------------------------------

_REPORT = """
import json, otel_resilience
from opentelemetry import metrics, trace

def exporter_of(processor):
    exporter = getattr(processor, "span_exporter", None) or processor._batch_processor._exporter
    return exporter

def name(obj):
    return type(obj).__module__ + "." + type(obj).__name__

def describe(handle):
    tp, mp = handle.tracer_provider, handle.meter_provider
    processors = getattr(getattr(tp, "_active_span_processor", None), "_span_processors", ())
    readers = getattr(mp, "_metric_readers", ())
    return {
        "tracer_provider": type(tp).__name__,
        "meter_provider": type(mp).__name__,
        "global_tracer_is_ours": trace.get_tracer_provider() is tp,
        "global_meter_is_ours": metrics.get_meter_provider() is mp,
        "owns": [handle.owns_tracer_provider, handle.owns_meter_provider],
        "processors": [[type(p).__name__, name(exporter_of(p))] for p in processors],
        "endpoints": [getattr(exporter_of(p), "_endpoint", None) for p in processors],
        "readers": [type(r).__name__ + (":" + type(r._exporter).__module__ if hasattr(r, "_exporter") else "")
                    for r in readers],
        "id_generator": name(getattr(tp, "id_generator", None)),
        "service": tp.resource.attributes.get("service.name") if hasattr(tp, "resource") else None,
        "instrumented": list(handle.instrumented),
    }
"""


def _configured(code: str, **env: str) -> dict[str, Any]:
    result = checked(run_python(_REPORT + code, env=clean_env(**env)))
    # The report is the last JSON line (the console summary may print after it, at exit).
    report = next(line for line in reversed(result.stdout.splitlines()) if line.startswith("{"))
    return json.loads(report)  # type: ignore[no-any-return]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_without_providers_setup_configures_otlp_grpc_by_default_and_makes_them_global() -> None:
    report = _configured("print(json.dumps(describe(otel_resilience.setup(service_name='checkout'))))")

    assert report["tracer_provider"] == "TracerProvider" and report["meter_provider"] == "MeterProvider"
    assert report["global_tracer_is_ours"] and report["global_meter_is_ours"]
    assert report["owns"] == [True, True]
    assert report["processors"] == [
        ["BatchSpanProcessor", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter.OTLPSpanExporter"]
    ]
    assert report["readers"] == ["PeriodicExportingMetricReader:opentelemetry.exporter.otlp.proto.grpc.metric_exporter"]
    assert report["service"] == "checkout"
    assert report["instrumented"][:2] == ["resilience_tenacity", "resilience_pybreaker"]


def test_arguments_choose_http_protobuf_and_the_endpoint_gets_the_signal_paths() -> None:
    report = _configured(
        "print(json.dumps(describe(otel_resilience.setup(exporter='otlp', protocol='http/protobuf', "
        "endpoint='http://collector.example:4318/'))))",
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
    )
    assert report["processors"] == [
        ["BatchSpanProcessor", "opentelemetry.exporter.otlp.proto.http.trace_exporter.OTLPSpanExporter"]
    ]
    assert report["endpoints"] == ["http://collector.example:4318/v1/traces"]
    assert report["readers"] == ["PeriodicExportingMetricReader:opentelemetry.exporter.otlp.proto.http.metric_exporter"]


def test_standard_variables_choose_exporter_protocol_endpoint_and_service() -> None:
    report = _configured(
        "print(json.dumps(describe(otel_resilience.setup())))",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_METRICS_EXPORTER="none",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="http/protobuf",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://traces.example:4318/v1/traces",
        OTEL_SERVICE_NAME="billing",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=test",
    )
    assert report["processors"] == [
        ["BatchSpanProcessor", "opentelemetry.exporter.otlp.proto.http.trace_exporter.OTLPSpanExporter"]
    ]
    assert report["endpoints"] == ["http://traces.example:4318/v1/traces"]
    assert report["meter_provider"] == "NoneType"  # OTEL_METRICS_EXPORTER=none: no provider configured
    assert report["owns"] == [True, False]
    assert report["service"] == "billing"


def test_console_exporter_prints_trees_with_a_simple_processor_and_the_metrics_summary_at_exit() -> None:
    report = _configured("print(json.dumps(describe(otel_resilience.setup(exporter='console'))))")
    assert report["processors"] == [["SimpleSpanProcessor", "otel_resilience.console.ConsoleTreeSpanExporter"]]
    assert report["readers"] == ["ConsoleSummaryMetricReader"]


def test_providers_setup_creates_draw_ids_from_a_private_source() -> None:
    report = _configured("print(json.dumps(describe(otel_resilience.setup(exporter='console'))))")
    assert report["id_generator"] == "otel_resilience._setup.ids.PrivateRandomIdGenerator"


@pytest.mark.parametrize("name", ["resilience_console", "console"])
def test_exporter_entry_points_named_by_otel_traces_exporter(name: str) -> None:
    report = _configured("print(json.dumps(describe(otel_resilience.setup())))", OTEL_TRACES_EXPORTER=name,
                         OTEL_METRICS_EXPORTER="none")
    expected = {
        "resilience_console": ["SimpleSpanProcessor", "otel_resilience.console.ConsoleTreeSpanExporter"],
        "console": ["BatchSpanProcessor", "opentelemetry.sdk.trace.export.ConsoleSpanExporter"],
    }[name]
    assert report["processors"] == [expected]


def test_exporter_none_configures_nothing_and_still_instruments() -> None:
    report = _configured("print(json.dumps(describe(otel_resilience.setup(exporter='none'))))")
    assert report["tracer_provider"] == "NoneType"
    assert report["meter_provider"] == "NoneType"
    assert report["owns"] == [False, False]
    assert "resilience_tenacity" in report["instrumented"]


def test_setup_respects_already_configured_global_providers() -> None:
    result = checked(run_python("""
        import json, tenacity, otel_resilience
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
        app_tracer_provider = TracerProvider()
        app_tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        app_meter_provider = MeterProvider(metric_readers=[reader])
        trace.set_tracer_provider(app_tracer_provider)
        metrics.set_meter_provider(app_meter_provider)

        handle = otel_resilience.setup(exporter="otlp", endpoint="http://127.0.0.1:9", service_name="ignored")

        @tenacity.retry(stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_none())
        def work():
            return 1

        work()
        handle.shutdown()
        names = [m.name for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
                 for m in sm.metrics]
        print(json.dumps({
            "same_tracer_provider": handle.tracer_provider is app_tracer_provider,
            "same_meter_provider": handle.meter_provider is app_meter_provider,
            "global_unchanged": trace.get_tracer_provider() is app_tracer_provider
                                and metrics.get_meter_provider() is app_meter_provider,
            "owns": [handle.owns_tracer_provider, handle.owns_meter_provider],
            "processors": len(app_tracer_provider._active_span_processor._span_processors),
            "spans": [s.name for s in exporter.get_finished_spans()],
            "metrics": names,
        }))
    """))
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "same_tracer_provider": True,
        "same_meter_provider": True,
        "global_unchanged": True,
        "owns": [False, False],
        "processors": 1,
        "spans": ["work", "retry work"],
        "metrics": ["retry.attempts", "retry.duration"],
    }


def test_a_missing_sdk_names_the_extra_to_install() -> None:
    result = run_python("""
        import sys
        sys.modules["opentelemetry.sdk"] = None  # as if the otlp extra were not installed
        import otel_resilience
        try:
            otel_resilience.setup()
        except ImportError as exc:
            print(exc)
    """)
    assert "install it with: pip install 'otel-resilience[otlp]'" in checked(result).stdout


def test_a_missing_exporter_names_the_extra_and_sets_no_global_provider() -> None:
    result = run_python("""
        import sys
        sys.modules["opentelemetry.exporter.otlp.proto.grpc"] = None
        import otel_resilience
        from opentelemetry import trace
        try:
            otel_resilience.setup(exporter="otlp", protocol="grpc")
        except ImportError as exc:
            print(exc)
        print(type(trace.get_tracer_provider()).__name__)
    """)
    lines = checked(result).stdout.strip().splitlines()
    assert "pip install 'otel-resilience[otlp]'" in lines[0]
    assert "opentelemetry.exporter.otlp.proto.grpc.trace_exporter" in lines[0]
    assert lines[1] == "ProxyTracerProvider"


# --- a collector that is down or hangs never blocks or breaks the app ----------------------------------------------

_APP = """
import json, sys, tenacity, pybreaker, otel_resilience
protocol, endpoint, shutdown = sys.argv[1], sys.argv[2], sys.argv[3]
handle = otel_resilience.setup(exporter="otlp", protocol=protocol, endpoint=endpoint)
calls = []

@tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none(), reraise=True)
def fetch():
    calls.append(1)
    if len(calls) < 3:
        raise ConnectionError("flaky")
    return "fetched"

breaker = pybreaker.CircuitBreaker(fail_max=1, name="down-test")
outcomes = [fetch()]
for _ in range(2):
    try:
        breaker.call(lambda: 1 / 0)
    except (ZeroDivisionError, pybreaker.CircuitBreakerError) as exc:
        outcomes.append(type(exc).__name__)
flushed = handle.force_flush(timeout=1.0)
print(json.dumps({"outcomes": outcomes, "attempts": len(calls), "flushed": flushed}), flush=True)
if shutdown == "explicit":
    print(json.dumps({"shutdown": handle.shutdown(timeout=1.0)}), flush=True)
"""


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
@pytest.mark.parametrize("shutdown", ["explicit", "at_exit"])
def test_a_collector_that_is_down_neither_blocks_nor_breaks_the_app(protocol: str, shutdown: str) -> None:
    # A closed port: every export fails. With a 10-minute export timeout, only our bounded waits can let the
    # process end before the hang guard.
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    result = checked(run_python(_APP, protocol, endpoint, shutdown, env=clean_env(OTEL_EXPORTER_OTLP_TIMEOUT="600")))
    first = json.loads(result.stdout.splitlines()[0])
    assert first["outcomes"] == ["fetched", "CircuitBreakerError", "CircuitBreakerError"]
    assert first["attempts"] == 3
    if shutdown == "explicit":
        assert json.loads(result.stdout.splitlines()[1]) == {"shutdown": False}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_a_collector_that_hangs_is_given_up_on_at_shutdown(protocol: str) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = checked(
            run_python(_APP, protocol, endpoint, "explicit", env=clean_env(OTEL_EXPORTER_OTLP_TIMEOUT="600"))
        )
    lines = result.stdout.splitlines()
    first = json.loads(lines[0])
    assert first["outcomes"] == ["fetched", "CircuitBreakerError", "CircuitBreakerError"]
    assert first["flushed"] is False
    assert json.loads(lines[1]) == {"shutdown": False}


# --- drop-in targets through setup() --------------------------------------------------------------------------------


def _flaky_operation(failures: int) -> Any:
    calls = {"n": 0}

    def fetch_quote() -> str:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise ConnectionError("quote service down")
        return "quote"

    return fetch_quote


def _target_operations(otel: Otel) -> list[Any]:
    return [s for s in otel.spans() if s.instrumentation_scope.name == "otel_resilience.targets"
            and s.name.startswith("retry ")]


def test_retry_targets_are_traced_and_uninstrumented_with_the_handle(fresh: None, otel: Otel) -> None:
    from tests.setup import _setup_app

    original = _setup_app.retry_call
    handle = otel_resilience.setup(**otel.kwargs(), libraries=[], retry_targets=["tests.setup._setup_app:retry_call"])
    assert _setup_app.retry_call is not original
    assert _setup_app.retry_call(_flaky_operation(1)) == "quote"
    (operation,) = _target_operations(otel)
    assert operation.attributes["retry.attempts"] == 2
    assert operation.attributes["retry.result"] == "success"

    handle.uninstrument()
    assert _setup_app.retry_call is original


def test_retry_targets_default_to_their_variable_unless_disabled(
    fresh: None, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.setup import _setup_app

    monkeypatch.setenv("OTEL_PYTHON_RESILIENCE_RETRY_TARGETS", "tests.setup._setup_app:retry_call")
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "resilience_targets")
    original = _setup_app.retry_call
    handle = otel_resilience.setup(**otel.kwargs(), libraries=[])
    assert _setup_app.retry_call is original
    handle.uninstrument()

    monkeypatch.delenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS")
    otel_resilience.setup(**otel.kwargs(), libraries=[])
    assert _setup_app.retry_call(_flaky_operation(0)) == "quote"
    assert [s.attributes["retry.attempts"] for s in _target_operations(otel)] == [1]


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        (["tests.setup._setup_app"], r"retry target 'tests.setup._setup_app'"),
        (["tests._no_such_module:retry_call"], r"tests._no_such_module"),
        (["tests.setup._setup_app:no_such_helper"], r"no_such_helper"),
    ],
)
def test_bad_targets_raise_value_error_and_nothing_is_configured_or_patched(
    fresh: None, targets: list[str], message: str
) -> None:
    global_provider = trace.get_tracer_provider()
    with pytest.raises(ValueError, match=message):
        otel_resilience.setup(exporter="otlp", endpoint="http://127.0.0.1:9", retry_targets=targets)
    _assert_nothing_happened(global_provider)


# --- the launcher reads the settings variables too ----------------------------------------------------------------

_PRINT_SETTINGS = [
    "-c",
    "from otel_resilience.core.config import SETTINGS; print(SETTINGS.attempt_spans, SETTINGS.stacktraces)",
]


def _under_launcher(**env: str) -> subprocess.CompletedProcess[str]:
    variables = clean_env(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none", **env)
    return checked(run([str(LAUNCHER), sys.executable, *_PRINT_SETTINGS], variables))


def test_the_launcher_applies_the_settings_variables() -> None:
    result = _under_launcher(OTEL_PYTHON_RESILIENCE_ATTEMPT_SPANS="On_Retry", OTEL_PYTHON_RESILIENCE_STACKTRACES="all")
    assert result.stdout.split() == ["on_retry", "all"]


def test_under_the_launcher_a_wrong_setting_is_one_error_and_the_app_runs() -> None:
    result = _under_launcher(OTEL_PYTHON_RESILIENCE_ATTEMPT_SPANS="most", OTEL_PYTHON_RESILIENCE_STACKTRACES="none")
    assert result.stdout.split() == ["all", "none"]
    errors = [line for line in result.stderr.splitlines() if "OTEL_PYTHON_RESILIENCE_ATTEMPT_SPANS" in line]
    assert errors == [
        "otel_resilience: OTEL_PYTHON_RESILIENCE_ATTEMPT_SPANS: 'most' is not accepted; use one of: all, on_retry, "
        "none; keeping attempt_spans=all"
    ]


def test_exporter_variables_are_not_checked_for_providers_setup_does_not_create(
    fresh: None, otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin_thrift")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")  # works for the launcher's gRPC exporter
    handle = otel_resilience.setup(**otel.kwargs(), libraries=[])
    assert handle.tracer_provider is otel.tracer_provider
