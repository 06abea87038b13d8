"""pytest plugin used by ``scripts/library-suites`` to run a library's own test suite bare or instrumented, unedited.

Loaded with ``-p library_suites_plugin`` (the script puts ``scripts/`` on ``PYTHONPATH``). Environment:

- ``LIBRARY_SUITES_IMPORT``: comma-separated modules imported at ``pytest_configure`` in both modes, so the bare and
  the instrumented run import the library from the same place (the installed copy, not a source copy in the sdist).
- ``LIBRARY_SUITES_APPEND_ROOT``: ``1`` appends the rootdir to ``sys.path`` (after site-packages, so the library
  still comes from the venv), for suites whose tests import each other as ``tests.x`` without a ``tests/__init__.py``.
- ``LIBRARY_SUITES_INSTRUMENT``: comma-separated entry-point names from
  ``otel_resilience.instrumentation.INSTRUMENTORS``. When set, a real SDK ``TracerProvider`` (spans go through a
  ``SimpleSpanProcessor``, so every span start and end path of ours runs synchronously) and a ``MeterProvider`` with a
  reader are made, and each instrumentor's ``instrument(tracer_provider=..., meter_provider=...)`` is called before
  any test module is imported. Unset: the bare baseline; nothing of OpenTelemetry is imported.
- ``LIBRARY_SUITES_PROPAGATE``: ``1`` keeps OpenTelemetry's default propagators (W3C trace context and baggage) in
  the instrumented run; otherwise the global propagator is an empty composite. HTTP attempts then still go through
  our injection code, but no ``traceparent`` header is added: that header is intended (DESIGN.md, HTTP), and tests
  that assert the exact headers a server received would otherwise see it, as under contrib's instrumentation.
- ``LIBRARY_SUITES_REPORT``: a JSON file written at session end: every test's outcome and, when instrumented, the
  spans and metric points our instrumentation produced. Zero spans means the instrumentation was not really active,
  which the script treats as a failed check.

Network guard, in both modes alike: this machine may send traffic to loopback addresses only, and some suites
connect elsewhere on purpose (urllib3's tests use the reserved address 240.0.0.0 as a "tarpit" for connect timeouts).
Every ``connect``/``connect_ex``/``sendto`` of an IPv4/IPv6 socket to a non-loopback address fails at once with
``ENETUNREACH`` (what a machine with no route says, so suites that probe for a route skip those tests), and each
refused address is listed in the report.

Outcomes are recorded per test node id: ``passed``, ``failed``, ``error`` (setup or teardown failed, or the module
did not collect), ``skipped``, ``xfailed``, ``xpassed``.
"""

from __future__ import annotations

import errno
import importlib
import ipaddress
import json
import os
import socket
import sys
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

_outcomes: dict[str, str] = {}
_imported: dict[str, str] = {}
_telemetry: dict[str, Any] = {}
_refused: Counter[str] = Counter()
_deselected: list[str] = []


def _loopback(host: str) -> bool:
    """Whether `host` (an address literal or a name) means this machine only."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        try:
            resolved = {info[4][0] for info in socket.getaddrinfo(host, None)}
        except OSError:
            return True  # unresolvable: connect fails by itself, with no traffic
        return all(_loopback(item) for item in resolved)
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or address.is_unspecified or bool(mapped and mapped.is_loopback)


def _guard_network() -> None:
    """Make connects and sends to anything but loopback fail with ENETUNREACH (see the module docstring)."""
    inet = (socket.AF_INET, socket.AF_INET6)

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in inet and isinstance(address, tuple) and not _loopback(str(address[0])):
            _refused[f"{address[0]}:{address[1]}"] += 1
            raise OSError(errno.ENETUNREACH, f"library-suites: no traffic beyond loopback ({address[0]})")

    original_connect, original_connect_ex, original_sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        return original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        try:
            check(self, address)
        except OSError as refused:
            return refused.errno or errno.ENETUNREACH
        return original_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        check(self, args[-1])
        return original_sendto(self, data, *args)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = sendto  # type: ignore[method-assign,assignment]


def _names(variable: str) -> list[str]:
    return [name.strip() for name in os.environ.get(variable, "").split(",") if name.strip()]


class _CountingExporter:
    """A span exporter that counts finished spans by instrumentation scope and name and keeps none of them (a long
    suite must not hold every span in memory)."""

    def __init__(self) -> None:
        self.by_scope: Counter[str] = Counter()
        self.by_name: Counter[str] = Counter()

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        for span in spans:
            scope = span.instrumentation_scope.name if span.instrumentation_scope else "?"
            self.by_scope[scope] += 1
            self.by_name[f"{scope}: {span.name}"] += 1
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def _instrument(names: list[str]) -> None:
    from opentelemetry import propagate
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from otel_resilience.instrumentation import INSTRUMENTORS

    if os.environ.get("LIBRARY_SUITES_PROPAGATE") != "1":
        propagate.set_global_textmap(CompositePropagator([]))
    exporter = _CountingExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[arg-type]
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    active: list[str] = []
    for name in names:
        module_name, _, class_name = INSTRUMENTORS[name].partition(":")
        instrumentor = getattr(importlib.import_module(module_name), class_name)()
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
        # _instrument returns quietly (telemetry None) when the installed version is outside the supported range.
        if getattr(instrumentor, "telemetry", None) is not None:
            active.append(name)
    _telemetry.update(exporter=exporter, reader=reader, requested=names, active=active)


def pytest_configure(config: pytest.Config) -> None:
    _guard_network()
    if os.environ.get("LIBRARY_SUITES_APPEND_ROOT") == "1":
        sys.path.append(str(config.rootpath))
    for name in _names("LIBRARY_SUITES_IMPORT"):
        _imported[name] = str(getattr(importlib.import_module(name), "__file__", None))
    names = _names("LIBRARY_SUITES_INSTRUMENT")
    if names:
        _instrument(names)


def _record(nodeid: str, outcome: str) -> None:
    # A teardown error after a pass or a failure is still reported once per test, as the worse of the two.
    if outcome == "error" or nodeid not in _outcomes:
        _outcomes[nodeid] = outcome


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    xfail = hasattr(report, "wasxfail")
    if report.when == "setup":
        if report.failed:
            _record(report.nodeid, "error")
        elif report.skipped:
            _record(report.nodeid, "xfailed" if xfail else "skipped")
    elif report.when == "call":
        if report.passed:
            _record(report.nodeid, "xpassed" if xfail else "passed")
        elif report.failed:
            _record(report.nodeid, "failed")
        else:
            _record(report.nodeid, "xfailed" if xfail else "skipped")
    elif report.failed:
        _record(report.nodeid, "error")


def pytest_deselected(items: Sequence[pytest.Item]) -> None:
    _deselected.extend(item.nodeid for item in items)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _record(report.nodeid or "<collection>", "error")


def _metric_points() -> dict[str, int]:
    points: Counter[str] = Counter()
    data = _telemetry["reader"].get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                points[metric.name] += len(metric.data.data_points)
    return dict(points)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    report: dict[str, Any] = {"outcomes": _outcomes, "imported": _imported, "deselected": _deselected,
                              "refused_connections": dict(_refused)}
    if _telemetry:
        exporter: _CountingExporter = _telemetry["exporter"]
        report.update(
            instrumentors=_telemetry["requested"],
            active=_telemetry["active"],
            spans=sum(exporter.by_scope.values()),
            spans_by_scope=dict(exporter.by_scope),
            top_span_names=dict(exporter.by_name.most_common(10)),
            metric_points=_metric_points(),
        )
    path = os.environ.get("LIBRARY_SUITES_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=1, sort_keys=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _telemetry:
        return
    exporter: _CountingExporter = _telemetry["exporter"]
    terminalreporter.write_sep("=", "otel_resilience instrumentation")
    terminalreporter.write_line(f"instrumentors requested: {', '.join(_telemetry['requested'])}")
    terminalreporter.write_line(f"instrumentors active:    {', '.join(_telemetry['active']) or 'NONE'}")
    terminalreporter.write_line(f"spans produced: {sum(exporter.by_scope.values())} {dict(exporter.by_scope)}")
    terminalreporter.write_line(f"metric points: {_metric_points()}")
