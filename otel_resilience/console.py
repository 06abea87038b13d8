"""The console view: each finished trace printed as an indented tree, readable at a glance, no backend needed.

    GET /users/{id}                          3.1 ms
    └── retry fetch_user                     2.9 ms  retry.name=app.fetch_user retry.attempts=3 retry.result=success ...
        ├── fetch_user                       0.2 ms  retry.attempt=1 error.type=ConnectionError retry.delay=0.1s  ✗ ...
        ├── fetch_user                       0.1 ms  retry.attempt=2 error.type=ConnectionError retry.delay=0.2s  ✗ ...
        └── fetch_user                       0.1 ms  retry.attempt=3

It is the embedded default of the demo (``otel_resilience.setup(exporter="console")``) and an
``opentelemetry_traces_exporter`` entry point named ``resilience_console``, so the launcher can use it too:
``OTEL_TRACES_EXPORTER=resilience_console opentelemetry-instrument python app.py``.

Spans are buffered per trace and the tree is printed when the trace's local root (a span without a parent, or whose
parent is remote) has ended, whichever span processor delivers them (simple or batch). Spans whose root never ends
here are printed, marked as incomplete, on `force_flush`/`shutdown`, or when too many traces are waiting.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TextIO

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from otel_resilience import semconv

# The attributes shown on a span's line, in this order (contract attributes first, then a few HTTP ones).
_SHOWN: Final = (
    semconv.RETRY_NAME,
    semconv.RETRY_ATTEMPT,
    semconv.HTTP_REQUEST_METHOD,
    semconv.HTTP_RESPONSE_STATUS_CODE,
    semconv.HTTP_REQUEST_RESEND_COUNT,
    semconv.ERROR_TYPE,
    semconv.RETRY_DELAY,
    semconv.RETRY_ATTEMPTS,
    semconv.RETRY_MAX_ATTEMPTS,
    semconv.RETRY_RESULT,
    semconv.RETRY_TOTAL_DELAY,
    semconv.RETRY_DEPTH,
    semconv.BREAKER_STATE,
    semconv.BREAKER_RESULT,
    semconv.BREAKER_FAILURE_COUNT,
    semconv.URL_FULL,
)
_SECONDS: Final = frozenset((semconv.RETRY_DELAY, semconv.RETRY_TOTAL_DELAY))
# Names that repeat the parent's value add nothing to a child's line (an attempt's retry.name is its operation's).
_INHERITED: Final = frozenset((semconv.RETRY_NAME, semconv.BREAKER_NAME))
_BAD_VALUES: Final = frozenset(
    (semconv.RESULT_EXHAUSTED, semconv.RESULT_NOT_RETRIED, semconv.RESULT_ABORTED, semconv.CALL_FAILURE,
     semconv.CALL_REJECTED, semconv.STATE_OPEN)
)
_GOOD_VALUES: Final = frozenset((semconv.RESULT_SUCCESS, semconv.STATE_CLOSED))
_WARN_VALUES: Final = frozenset((semconv.STATE_HALF_OPEN, semconv.CALL_IGNORED))
_MESSAGE_LIMIT: Final = 100
_NAME_COLUMN_LIMIT: Final = 56


@dataclass(frozen=True)
class _Glyphs:
    branch: str
    last: str
    pipe: str
    blank: str
    error: str
    arrow: str
    event: str
    attempt: str


_UNICODE: Final = _Glyphs("├── ", "└── ", "│   ", "    ", "✗", "→", "⚡", "↻")
_ASCII: Final = _Glyphs("|-- ", "`-- ", "|   ", "    ", "x", "->", "*", "@")
_ATTEMPT_EVENTS: Final = frozenset((semconv.RETRY_ATTEMPT_EVENT, semconv.HTTP_RESEND_EVENT))
"""Attempts recorded as events (``attempt_spans="none"``, or earlier HTTP attempts beside contrib's one span)."""


class _Style:
    """ANSI colours when writing to a terminal (and NO_COLOR is not set), plain text otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled and text else text

    bold = functools.partialmethod(_wrap, "1")
    dim = functools.partialmethod(_wrap, "2")
    red = functools.partialmethod(_wrap, "31")
    green = functools.partialmethod(_wrap, "32")
    yellow = functools.partialmethod(_wrap, "33")
    cyan = functools.partialmethod(_wrap, "36")


def _format_number(value: float) -> str:
    return f"{value:.6g}"


def format_duration(nanoseconds: int) -> str:
    """A span's duration for people: microseconds, milliseconds or seconds, three significant digits."""
    if nanoseconds < 1_000_000:
        return f"{nanoseconds / 1_000:.0f} µs" if nanoseconds >= 1_000 else f"{nanoseconds} ns"
    if nanoseconds < 1_000_000_000:
        return f"{nanoseconds / 1_000_000:.3g} ms"
    return f"{nanoseconds / 1_000_000_000:.3g} s"


def format_seconds(seconds: float) -> str:
    """A delay in seconds for people: ``0 s``, ``731 µs``, ``1.01 ms``, ``300 ms``, ``2.5 s``."""
    if seconds <= 0:
        return "0 s"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def _format_value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)) and key in _SECONDS:
        return format_seconds(float(value)).replace(" ", "")
    if isinstance(value, float):
        return _format_number(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(key, v) for v in value) + "]"
    return str(value)


def _is_local_root(span: ReadableSpan) -> bool:
    parent = span.parent
    return parent is None or parent.is_remote


class TraceTreeRenderer:
    """Turns the spans of one trace into the lines of an indented tree."""

    def __init__(self, *, colour: bool, unicode: bool) -> None:
        self.style = _Style(colour)
        self.glyphs = _UNICODE if unicode else _ASCII

    def render(self, spans: Sequence[ReadableSpan], *, incomplete: bool = False) -> list[str]:
        """Lines for `spans` (one trace): the tree under each local root, then any span whose parent is missing
        here as a root of its own."""
        by_id = {span.context.span_id: span for span in spans if span.context is not None}
        children: dict[int, list[ReadableSpan]] = {}
        roots: list[ReadableSpan] = []
        for span in spans:
            parent = span.parent
            if parent is None or parent.is_remote or parent.span_id not in by_id:
                roots.append(span)
            else:
                children.setdefault(parent.span_id, []).append(span)
        rows: list[tuple[str, str, ReadableSpan | None]] = []  # (tree prefix, name or event text, span or None)
        roots.sort(key=_start)
        for root in roots:
            self._walk(root, children, "", "", rows)
        width = min(_NAME_COLUMN_LIMIT, max((len(prefix) + len(text) for prefix, text, span in rows if span), default=0))
        trace_id = spans[0].context.trace_id if spans and spans[0].context is not None else 0
        header = f"trace {trace_id:032x}"
        if incomplete:
            header += " (incomplete: its root span has not ended here)"
        lines = [self.style.dim(header)]
        for prefix, text, span in rows:
            if span is None:  # an event line under a span
                lines.append(f"{self.style.dim(prefix)}{text}")
            else:
                lines.append(self._span_line(prefix, text, span, width, by_id))
        return lines

    def _walk(
        self,
        span: ReadableSpan,
        children: Mapping[int, list[ReadableSpan]],
        prefix: str,
        continuation: str,
        rows: list[tuple[str, str, ReadableSpan | None]],
    ) -> None:
        rows.append((prefix, span.name, span))
        kids = sorted(children.get(span.context.span_id, ()), key=_start) if span.context is not None else []
        event_prefix = continuation + (self.glyphs.pipe if kids else self.glyphs.blank)
        for event in span.events:
            if event.name == semconv.BREAKER_STATE_CHANGE_EVENT:
                rows.append((event_prefix, self._state_change(event.attributes or {}), None))
            elif event.name in _ATTEMPT_EVENTS:
                rows.append((event_prefix, self._attempt_event(event.name, event.attributes or {}), None))
        for index, kid in enumerate(kids):
            last = index == len(kids) - 1
            branch = self.glyphs.last if last else self.glyphs.branch
            more = self.glyphs.blank if last else self.glyphs.pipe
            self._walk(kid, children, continuation + branch, continuation + more, rows)

    def _state_change(self, attributes: Mapping[str, Any]) -> str:
        previous = str(attributes.get(semconv.BREAKER_PREVIOUS_STATE, "?"))
        state = str(attributes.get(semconv.BREAKER_STATE, "?"))
        return (
            f"{self.style.yellow(self.glyphs.event)} {semconv.BREAKER_STATE_CHANGE_EVENT} "
            f"{self._coloured(previous)} {self.glyphs.arrow} {self._coloured(state)}"
        )

    def _attempt_event(self, name: str, attributes: Mapping[str, Any]) -> str:
        text = f"{self.style.cyan(self.glyphs.attempt)} {name}  {self._attributes_text(attributes, {})}".rstrip()
        message = _exception_text(attributes, attributes.get(semconv.ERROR_TYPE))
        return f"{text}  {self.style.red(f'{self.glyphs.error} {message}')}" if message else text

    def _attributes_text(self, attributes: Mapping[str, Any], parent_attributes: Mapping[str, Any]) -> str:
        """The shown attributes as ``key=value`` pairs, in contract order, coloured by meaning."""
        parts = []
        for key in _SHOWN:
            if key not in attributes:
                continue
            value = attributes[key]
            if key in _INHERITED and parent_attributes.get(key) == value:
                continue
            text = _format_value(key, value)
            if key == semconv.ERROR_TYPE:
                text = self.style.red(text)
            elif key in _SECONDS:
                text = self.style.cyan(text)
            else:
                text = self._coloured(text)
            parts.append(f"{key}={text}")
        return " ".join(parts)

    def _coloured(self, value: str) -> str:
        if value in _BAD_VALUES:
            return self.style.red(value)
        if value in _GOOD_VALUES:
            return self.style.green(value)
        if value in _WARN_VALUES:
            return self.style.yellow(value)
        return value

    def _span_line(
        self, prefix: str, name: str, span: ReadableSpan, width: int, by_id: Mapping[int, ReadableSpan]
    ) -> str:
        parent = by_id.get(span.parent.span_id) if span.parent is not None else None
        parent_attributes = (parent.attributes or {}) if parent is not None else {}
        padding = " " * max(1, width - len(prefix) - len(name) + 2)
        duration = format_duration(max(0, (span.end_time or 0) - (span.start_time or 0)))
        line = f"{self.style.dim(prefix)}{self.style.bold(name)}{padding}{self.style.dim(f'{duration:>9}')}"
        details = self._attributes_text(span.attributes or {}, parent_attributes)
        if details:
            line = f"{line}  {details}"
        if span.status.status_code is StatusCode.ERROR:
            line = f"{line}  {self.style.red(f'{self.glyphs.error} {_failure(span)}'.rstrip())}"
        return line


def _exception_text(attributes: Mapping[str, Any], shown_type: object) -> str:
    """An exception's type and first message line from `attributes` (``exception.*``), without the type when it is
    `shown_type` (the line shows it as `error.type` already); empty when there is no exception."""
    kind = str(attributes.get(semconv.EXCEPTION_TYPE, ""))
    lines = str(attributes.get(semconv.EXCEPTION_MESSAGE, "")).strip().splitlines()
    message = lines[0] if lines else ""
    if not message:
        text = kind
    elif kind == shown_type or not kind:
        text = message
    else:
        text = f"{kind}: {message}"
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def _failure(span: ReadableSpan) -> str:
    """A failed span's error in a few words: its last exception event, else the status description."""
    shown_type = (span.attributes or {}).get(semconv.ERROR_TYPE)
    for event in reversed(span.events):
        if event.name == semconv.EXCEPTION_EVENT:
            return _exception_text(event.attributes or {}, shown_type)
    return span.status.description or "ERROR"


def _start(span: ReadableSpan) -> int:
    return span.start_time or 0


def _wants_colour(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):
        return False


def _can_encode(stream: TextIO, text: str) -> bool:
    encoding = getattr(stream, "encoding", None)
    if not encoding:  # an in-memory text stream holds any text
        return True
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class ConsoleTreeSpanExporter(SpanExporter):
    """A `SpanExporter` that prints each finished trace as an indented tree (see the module docstring).

    `out` is the stream to write to (default: ``sys.stdout`` at the time of writing); `colour` forces colour on or
    off (default: only when the stream is a terminal and ``NO_COLOR`` is unset). At most `max_pending_traces`
    traces wait for their root span; beyond that the oldest is printed as incomplete, so memory stays bounded."""

    def __init__(self, out: TextIO | None = None, *, colour: bool | None = None, max_pending_traces: int = 1000) -> None:
        self._out = out
        self._colour = colour
        self._max_pending = max(1, max_pending_traces)
        self._pending: OrderedDict[int, list[ReadableSpan]] = OrderedDict()
        self._lock = threading.Lock()
        self._shut_down = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shut_down:
            return SpanExportResult.FAILURE
        ready: list[tuple[list[ReadableSpan], bool]] = []
        with self._lock:
            for span in spans:
                if span.context is None:
                    continue
                trace_id = span.context.trace_id
                self._pending.setdefault(trace_id, []).append(span)
                if _is_local_root(span):
                    ready.append((self._pending.pop(trace_id), False))
            while len(self._pending) > self._max_pending:
                _, oldest = self._pending.popitem(last=False)
                ready.append((oldest, True))
        for trace_spans, incomplete in ready:
            self._print(trace_spans, incomplete=incomplete)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Print every trace still waiting for its root span, marked as incomplete."""
        with self._lock:
            waiting = list(self._pending.values())
            self._pending.clear()
        for trace_spans in waiting:
            self._print(trace_spans, incomplete=True)
        return True

    def shutdown(self) -> None:
        self.force_flush()
        self._shut_down = True

    def _print(self, spans: list[ReadableSpan], *, incomplete: bool) -> None:
        stream = self._out if self._out is not None else sys.stdout
        colour = _wants_colour(stream) if self._colour is None else self._colour
        renderer = TraceTreeRenderer(colour=colour, unicode=_can_encode(stream, "├─│└✗→⚡↻µ…"))
        lines = renderer.render(spans, incomplete=incomplete)
        if renderer.glyphs is not _UNICODE:
            lines = [line.replace("µs", "us").replace("…", "...") for line in lines]
        text = "\n".join(lines) + "\n\n"
        with self._lock:
            stream.write(text)
            stream.flush()
