"""A real OpenTelemetry collector for the end-to-end tests: the ``rotel`` agent that the ``rotel`` wheel ships.

`RotelCollector.start(workdir)` runs ``rotel-agent start`` on two free loopback ports (OTLP/gRPC and OTLP/HTTP), with
the blackhole exporter and the debug log of traces and metrics at detailed verbosity, its stdout and stderr captured
to files; `spans()` and `metrics()` parse what it printed (the format of rotel 0.0.1a15, which is the OpenTelemetry
Collector's debug exporter layout):

    ScopeSpans #0
    InstrumentationScope otel_resilience.tenacity
    Span #0
        Trace ID       : f70e78c45a11bfa23b6701c300e2f390
        Parent ID      : 3e91e1b51100c79a
        ...
    Attributes:
         -> retry.attempt: Int(1)
    Events:
    SpanEvent #0
         -> Name: exception
         -> Attributes::
              -> exception.type: Str(ConnectionError)

`collector_or_skip(workdir)` is what a test calls: in CI (``CI=true``) a collector that cannot start fails the test;
elsewhere a platform without the binary skips it, saying why.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ATTRIBUTE = re.compile(r"^ {5}-> (?P<key>[^:]+): (?P<type>Str|Int|Double|Bool|Slice|Map|Bytes|Empty)\((?P<rest>.*)$")
_EVENT_ATTRIBUTE = re.compile(r"^ {10}-> (?P<key>[^:]+): (?P<type>Str|Int|Double|Bool|Slice|Map|Bytes|Empty)\((?P<rest>.*)$")
_FIELD = re.compile(r"^\s*(?P<key>Trace ID|Parent ID|ID|Name|Kind|Start time|Status code|Status message)\s*: ?(?P<value>.*)$")
_STRUCTURE = re.compile(
    r"^(Resource(Spans|Metrics|Logs) #|Resource SchemaURL|Resource attributes:|Scope(Spans|Metrics|Logs) |"
    r"InstrumentationScope |Span #|Start time:|End time:|Attributes:|Events:|SpanEvent #|Links:|SpanLink #|"
    r"Metric #|Descriptor:|\w*DataPoints #|Data point attributes:|StartTimestamp:|Timestamp:|Value:|Count:|Sum:|"
    r"Min:|Max:|ExplicitBounds #|Buckets #|\d{4}-\d\d-\d\dT| {4}(Trace ID|Parent ID|ID|Name|Kind|Status) | {5}-> "
    r"| {10}-> )"
)
"""The lines rotel itself starts; any other line continues a multi-line string value."""
_START_TIMEOUT = 30.0
T = TypeVar("T")


@dataclass
class Event:
    name: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Span:
    scope: str
    resource: dict[str, Any]
    trace_id: str = ""
    span_id: str = ""
    parent_id: str = ""
    name: str = ""
    kind: str = ""
    status: str = ""
    start_ns: int = 0
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


@dataclass
class Point:
    attributes: dict[str, Any] = field(default_factory=dict)
    values: dict[str, str] = field(default_factory=dict)
    """``Value``, ``Count``, ``Sum``, ``Min``, ``Max`` as printed."""


@dataclass
class Metric:
    scope: str
    resource: dict[str, Any]
    name: str = ""
    unit: str = ""
    data_type: str = ""
    points: list[Point] = field(default_factory=list)


def _value(kind: str, text: str) -> Any:
    if kind == "Int":
        return int(text)
    if kind == "Double":
        return float(text)
    if kind == "Bool":
        return text == "true"
    return text


class _Parser:
    """A line-by-line reader of rotel's debug log. Multi-line string values (stacktraces) continue until the next
    line that rotel itself starts (an attribute at the same depth or a section header)."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.metrics: list[Metric] = []
        self._resource: dict[str, Any] = {}
        self._scope = ""
        self._section = ""  # which attribute list the next "->" lines belong to
        self._target: dict[str, Any] | None = None
        self._open: tuple[dict[str, Any], str, str, list[str]] | None = None  # a value still being read

    def feed(self, text: str) -> None:
        for raw in _ANSI.sub("", text).splitlines():
            self._line(raw)
        self._close_value()

    def _close_value(self) -> None:
        if self._open is None:
            return
        target, key, kind, parts = self._open
        joined = "\n".join(parts)
        target[key] = _value(kind, joined[:-1] if joined.endswith(")") else joined)
        self._open = None

    def _line(self, line: str) -> None:
        attribute = _ATTRIBUTE.match(line) or _EVENT_ATTRIBUTE.match(line)
        if self._open is not None:
            if not _STRUCTURE.match(line):
                self._open[3].append(line)
                return
            self._close_value()
        if line.startswith("ResourceSpans #") or line.startswith("ResourceMetrics #"):
            self._resource = {}
            self._section, self._target = "resource", self._resource
        elif line.startswith("InstrumentationScope "):
            self._scope = line.split(" ", 1)[1].strip().split(" ")[0]
        elif line.startswith("Span #"):
            self.spans.append(Span(scope=self._scope, resource=self._resource))
            self._section, self._target = "span", None
        elif line.startswith("Attributes:") and self.spans and self._section == "span":
            self._target = self.spans[-1].attributes
        elif line.startswith("SpanEvent #") and self.spans:
            self.spans[-1].events.append(Event(name=""))
            self._section, self._target = "event", self.spans[-1].events[-1].attributes
        elif line.startswith("Metric #"):
            self.metrics.append(Metric(scope=self._scope, resource=self._resource))
            self._section, self._target = "metric", None
        elif re.match(r"^\w*DataPoints #", line) and self.metrics:
            self.metrics[-1].points.append(Point())
            self._section, self._target = "point", self.metrics[-1].points[-1].attributes
        elif self._section == "span" and (found := _FIELD.match(line)) and not attribute:
            self._span_field(found.group("key"), found.group("value").strip())
        elif self._section == "event" and line.strip().startswith("-> Name:"):
            self.spans[-1].events[-1].name = line.split(":", 1)[1].strip()
        elif self._section == "metric" and line.strip().startswith("-> ") and not attribute:
            self._metric_field(line.strip()[3:])
        elif self._section == "point" and re.match(r"^(Value|Count|Sum|Min|Max): ", line):
            key, value = line.split(": ", 1)
            self.metrics[-1].points[-1].values[key] = value.strip()
        elif attribute is not None and self._target is not None:
            self._open = (self._target, attribute.group("key"), attribute.group("type"), [attribute.group("rest")])

    def _span_field(self, key: str, value: str) -> None:
        span = self.spans[-1]
        if key == "Start time":
            span.start_ns = int(value)
            return
        name = {"Trace ID": "trace_id", "Parent ID": "parent_id", "ID": "span_id", "Name": "name", "Kind": "kind",
                "Status code": "status"}.get(key)
        if name is not None:
            setattr(span, name, value)

    def _metric_field(self, text: str) -> None:
        key, _, value = text.partition(": ")
        metric = self.metrics[-1]
        if key == "Name":
            metric.name = value.strip()
        elif key == "Unit":
            metric.unit = value.strip()
        elif key == "DataType":
            metric.data_type = value.strip()


def parse(text: str) -> tuple[list[Span], list[Metric]]:
    """Spans and metrics in rotel's debug log `text`."""
    parser = _Parser()
    parser.feed(text)
    return parser.spans, parser.metrics


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def rotel_binary() -> Path:
    """The agent inside the installed ``rotel`` package; raises `FileNotFoundError` saying why it is unusable."""
    try:
        import rotel
    except ImportError as exc:
        raise FileNotFoundError(f"the rotel package is not installed ({exc}); it comes with the test extra") from exc
    binary = Path(rotel.__file__).parent / "rotel-agent"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise FileNotFoundError(f"the rotel wheel for this platform ships no usable agent at {binary}")
    return binary


class CollectorError(RuntimeError):
    """The collector could not be started."""


@dataclass
class RotelCollector:
    process: subprocess.Popen[bytes]
    grpc_port: int
    http_port: int
    stdout_path: Path
    stderr_path: Path

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @classmethod
    def start(cls, workdir: Path, attempts: int = 3) -> RotelCollector:
        """Start rotel on free ports and wait until both listen (a port taken meanwhile: try again)."""
        binary = rotel_binary()
        problem = ""
        for attempt in range(attempts):
            grpc_port, http_port = _free_port(), _free_port()
            stdout_path = workdir / f"rotel-{attempt}.out"
            stderr_path = workdir / f"rotel-{attempt}.err"
            command = [
                str(binary), "start",
                "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
                "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
                "--exporter", "blackhole",
                "--debug-log", "traces", "--debug-log", "metrics",
                "--debug-log-verbosity", "detailed",
                "--pid-file", str(workdir / f"rotel-{attempt}.pid"),
                "--log-file", str(workdir / f"rotel-{attempt}.log"),
            ]  # fmt: skip
            with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
                try:
                    process = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
                except OSError as exc:
                    raise CollectorError(f"cannot run {binary}: {exc}") from exc
            collector = cls(process, grpc_port, http_port, stdout_path, stderr_path)
            deadline = time.monotonic() + _START_TIMEOUT
            while time.monotonic() < deadline and process.poll() is None:
                if _listening(grpc_port) and _listening(http_port):
                    return collector
                time.sleep(0.05)
            collector.stop()
            problem = (
                f"rotel did not listen on 127.0.0.1:{grpc_port} and :{http_port} (exit code {process.returncode}); "
                f"stderr: {stderr_path.read_text(errors='replace')[-2000:]}"
            )
        raise CollectorError(problem)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def spans(self) -> list[Span]:
        return parse(self.output())[0]

    def metrics(self) -> list[Metric]:
        return parse(self.output())[1]

    def wait_for(self, what: str, probe: Callable[[list[Span], list[Metric]], T | None], timeout: float = 60.0) -> T:
        """Poll what the collector printed until `probe` returns something (rotel batches for up to 200 ms before
        printing); fail with the collector's output when it never does."""
        deadline = time.monotonic() + timeout
        while True:
            spans, metrics = parse(self.output())
            found = probe(spans, metrics)
            if found:
                return found
            if time.monotonic() > deadline or self.process.poll() is not None:
                tail = self.output()[-4000:]
                raise AssertionError(f"the collector never received {what}; its output ends with:\n{tail}")
            time.sleep(0.1)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def collector_or_skip(workdir: Path) -> RotelCollector:
    """A started collector. In CI one that cannot start fails the test; elsewhere a platform without the binary
    skips it with the reason (any other start-up failure fails everywhere)."""
    try:
        return RotelCollector.start(workdir)
    except FileNotFoundError as exc:
        if in_ci():
            pytest.fail(f"CI=true and the collector cannot start: {exc}")
        pytest.skip(f"no rotel collector on this platform: {exc}")
    except CollectorError as exc:
        pytest.fail(f"the collector did not start: {exc}")
