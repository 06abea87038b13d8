"""The console view's metrics: one compact summary when the program ends, not a dump per export interval.

    retries                          operations  success  exhausted  attempts
    examples.service.fetch_user               2        1          1         7

    breakers  state   calls  success  failure  rejected  transitions
    payments  closed      6        2        3         1  3 (closed→open, open→half_open, half_open→closed)

`ConsoleSummaryMetricReader` is what ``setup(exporter="console")`` uses for metrics, and the
``opentelemetry_metrics_exporter`` entry point ``resilience_console``, so the launcher can print it too:
``OTEL_TRACES_EXPORTER=resilience_console OTEL_METRICS_EXPORTER=resilience_console opentelemetry-instrument python
app.py``. It is a metric reader that never exports on a timer and never touches the network: it reads the metrics
once, at shutdown (the SDK shuts its meter provider down at interpreter exit), and prints them aligned, in colour only
on a terminal, like the trace trees.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

from opentelemetry import trace
from opentelemetry.sdk.metrics.export import MetricReader, MetricsData

from otel_resilience import semconv
from otel_resilience.console import _can_encode, _Style, _wants_colour

_TRACE_FLUSH_MILLIS: Final = 2000
"""How long shutdown waits for the trace trees still buffered, so that they print before the summary."""


@dataclass
class RetrySummary:
    """One `retry.name`: operations by `retry.result`, and the attempts they made."""

    operations: Counter[str] = field(default_factory=Counter)
    attempts: int = 0


@dataclass
class BreakerSummary:
    """One `circuitbreaker.name`: its state now, calls by `circuitbreaker.result`, transitions by (from, to)."""

    state: str | None = None
    calls: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass
class Summary:
    retries: dict[str, RetrySummary] = field(default_factory=lambda: defaultdict(RetrySummary))
    breakers: dict[str, BreakerSummary] = field(default_factory=lambda: defaultdict(BreakerSummary))


def summarise(data: MetricsData | None) -> Summary:
    """The contract's metrics (cumulative, as this reader collects them) folded per retry and per breaker."""
    summary = Summary()
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in getattr(metric.data, "data_points", ()):
                    _add(summary, metric.name, dict(point.attributes or {}), point)
    return summary


def _add(summary: Summary, name: str, attributes: dict[str, Any], point: Any) -> None:
    if name == semconv.METRIC_RETRY_ATTEMPTS and semconv.RETRY_NAME in attributes:
        retry = summary.retries[str(attributes[semconv.RETRY_NAME])]
        retry.operations[str(attributes.get(semconv.RETRY_RESULT, "?"))] += int(point.count)
        retry.attempts += int(round(point.sum))
    elif name == semconv.METRIC_BREAKER_CALLS and semconv.BREAKER_NAME in attributes:
        breaker = summary.breakers[str(attributes[semconv.BREAKER_NAME])]
        breaker.calls[str(attributes.get(semconv.BREAKER_RESULT, "?"))] += int(point.value)
    elif name == semconv.METRIC_BREAKER_TRANSITIONS and semconv.BREAKER_NAME in attributes:
        breaker = summary.breakers[str(attributes[semconv.BREAKER_NAME])]
        change = (
            str(attributes.get(semconv.BREAKER_PREVIOUS_STATE, "?")),
            str(attributes.get(semconv.BREAKER_STATE, "?")),
        )
        breaker.transitions[change] += int(point.value)
    elif name == semconv.METRIC_BREAKER_STATE and semconv.BREAKER_NAME in attributes and point.value >= 1:
        summary.breakers[str(attributes[semconv.BREAKER_NAME])].state = str(attributes.get(semconv.BREAKER_STATE))


def _ordered(seen: Iterable[str], contract: Sequence[str]) -> list[str]:
    """The contract's values in its order (success always), then any other value seen."""
    present = set(seen)
    return [v for v in contract if v in present or v == contract[0]] + sorted(present - set(contract))


class SummaryRenderer:
    """A `Summary` as aligned lines: one table for retries, one for breakers."""

    def __init__(self, *, colour: bool, unicode: bool) -> None:
        self.style = _Style(colour)
        self.arrow = "→" if unicode else "->"

    def render(self, summary: Summary) -> list[str]:
        lines = [self.style.dim("otel_resilience summary")]
        if not summary.retries and not summary.breakers:
            return [lines[0] + self.style.dim(": no retries or circuit breakers were recorded")]
        if summary.retries:
            lines += self._retries(summary.retries)
        if summary.breakers:
            if summary.retries:
                lines.append("")
            lines += self._breakers(summary.breakers)
        return lines

    def _retries(self, retries: dict[str, RetrySummary]) -> list[str]:
        results = _ordered((r for s in retries.values() for r in s.operations), semconv.RETRY_RESULTS)
        header = ["retries", "operations", *results, "attempts"]
        rows = [
            [name, str(sum(s.operations.values())), *(str(s.operations[r]) for r in results), str(s.attempts)]
            for name, s in sorted(retries.items())
        ]
        return self._table(header, rows, results_from=2, last_free=False)

    def _breakers(self, breakers: dict[str, BreakerSummary]) -> list[str]:
        results = _ordered((r for s in breakers.values() for r in s.calls), semconv.BREAKER_RESULTS)
        header = ["breakers", "state", "calls", *results, "transitions"]
        rows = [
            [
                name,
                s.state or "?",
                str(sum(s.calls.values())),
                *(str(s.calls[r]) for r in results),
                self._transitions(s.transitions),
            ]
            for name, s in sorted(breakers.items())
        ]
        return self._table(header, rows, results_from=3, last_free=True)

    def _transitions(self, transitions: Counter[tuple[str, str]]) -> str:
        if not transitions:
            return "0"
        parts = [
            f"{before}{self.arrow}{after}" + (f" ×{count}" if count > 1 else "")
            for (before, after), count in transitions.items()
        ]
        return f"{sum(transitions.values())} ({', '.join(parts)})"

    def _table(self, header: list[str], rows: list[list[str]], *, results_from: int, last_free: bool) -> list[str]:
        """Names left-aligned, numbers right-aligned under their header; a free-text last column stays as it is.
        Colour: a bad result that happened in red, success in green, the state as the trees colour it."""
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        last = len(header) - 1
        lines = [
            self.style.bold(
                "  ".join(self._cell(h, i, widths, header, free=last_free and i == last) for i, h in enumerate(header))
                .rstrip()
            )
        ]
        for row in rows:
            cells = []
            for i, text in enumerate(row):
                cell = self._cell(text, i, widths, header, free=last_free and i == last)
                column = header[i]
                if i == 0:
                    cell = self.style.bold(cell)
                elif column == "state":
                    cell = self._state(text, cell)
                elif i >= results_from and column in semconv.RETRY_RESULTS + semconv.BREAKER_RESULTS and text != "0":
                    cell = self.style.green(cell) if column == semconv.RESULT_SUCCESS else self.style.red(cell)
                elif text == "0":
                    cell = self.style.dim(cell)
                cells.append(cell)
            lines.append("  ".join(cells).rstrip())
        return lines

    @staticmethod
    def _cell(text: str, index: int, widths: list[int], header: list[str], *, free: bool = False) -> str:
        if free:
            return text
        if index == 0 or header[index] == "state":
            return text.ljust(widths[index])
        return text.rjust(widths[index])

    def _state(self, state: str, cell: str) -> str:
        if state == semconv.STATE_CLOSED:
            return self.style.green(cell)
        if state == semconv.STATE_OPEN:
            return self.style.red(cell)
        if state == semconv.STATE_HALF_OPEN:
            return self.style.yellow(cell)
        return cell


class ConsoleSummaryMetricReader(MetricReader):
    """Prints one summary of retries and breakers when its meter provider shuts down (see the module docstring).

    `out` is the stream (default: ``sys.stdout`` when printing); `colour` forces colour on or off (default: only on a
    terminal with ``NO_COLOR`` unset). `force_flush` only reads the metrics: the summary is printed once."""

    def __init__(self, out: TextIO | None = None, *, colour: bool | None = None) -> None:
        super().__init__()
        self._out = out
        self._colour = colour
        self._latest: MetricsData | None = None
        self._printed = False

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self._latest = metrics_data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        if self._printed:
            return
        self._printed = True
        self.collect(timeout_millis=timeout_millis)
        _flush_traces()
        self._print(summarise(self._latest))

    def _print(self, summary: Summary) -> None:
        stream = self._out if self._out is not None else sys.stdout
        colour = _wants_colour(stream) if self._colour is None else self._colour
        renderer = SummaryRenderer(colour=colour, unicode=_can_encode(stream, "→×"))
        lines = renderer.render(summary)
        if renderer.arrow != "→":
            lines = [line.replace("×", "x") for line in lines]
        try:
            stream.write("\n".join(lines) + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # the stream is closed or gone (a pipe whose reader left): nobody is there to read it


def _flush_traces() -> None:
    """Let the trace trees still waiting in a batch processor print first: under the launcher the meter provider is
    shut down before the tracer provider (exit hooks run last-registered first)."""
    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if callable(flush):
        try:
            flush(_TRACE_FLUSH_MILLIS)
        except Exception:  # a provider of the app's that fails to flush must not lose the summary
            pass


__all__ = ["ConsoleSummaryMetricReader", "Summary", "SummaryRenderer", "summarise"]
