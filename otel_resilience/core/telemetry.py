"""One `Telemetry` per instrumented library: its tracer, meter and instruments, got once at instrument time.

Getting a tracer or meter on every call is a trap (the SDK may warn from `get_tracer()`, and apps that turn warnings
into errors break), so adapters receive this object when they are instrumented and keep it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import _internal as _metrics_internal
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, get_current
from opentelemetry.instrumentation.utils import _SUPPRESS_INSTRUMENTATION_KEY_PLAIN
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import TracerProvider

from otel_resilience import semconv
from otel_resilience.core._safety import report_internal_error
from otel_resilience.core.config import SETTINGS, Settings
from otel_resilience.version import __version__

if TYPE_CHECKING:
    from otel_resilience.core.registry import BreakerEntry


_SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"


def _run_guarded(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        report_internal_error(f"installing hooks ({getattr(callback, '__qualname__', callback)})")


def _is_noop_tracer(tracer: trace.Tracer) -> bool:
    if isinstance(tracer, trace.ProxyTracer):
        tracer = tracer._tracer  # resolves to the real tracer once a global provider is set
    return isinstance(tracer, trace.NoOpTracer)


def _is_noop_meter(meter: metrics.Meter) -> bool:
    real = getattr(meter, "_real_meter", meter)  # the API's proxy meter until a global provider is set
    return real is None or isinstance(real, metrics.NoOpMeter)


class Telemetry:
    """The instrumentation scope ``otel_resilience.{library}``: where the core creates spans and records metrics."""

    def __init__(
        self,
        library: str,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        settings: Settings = SETTINGS,
    ) -> None:
        self.library = library
        self.settings = settings
        scope = f"{semconv.SCOPE_PREFIX}.{library}"
        self.tracer = trace.get_tracer(scope, __version__, tracer_provider, schema_url=_SCHEMA_URL)
        self.meter = metrics.get_meter(scope, __version__, meter_provider, schema_url=_SCHEMA_URL)
        self._live = False
        self._uses_globals = tracer_provider is None and meter_provider is None
        self._when_live: list[Callable[[], None]] = []
        self._live_lock = threading.Lock()
        self.disabled = False
        """Set when uninstrumenting could not remove our wrapper (another layer sat on it): record nothing more."""
        self.retry_attempts = self.meter.create_histogram(
            semconv.METRIC_RETRY_ATTEMPTS,
            unit="{attempt}",
            description="Attempts made by one retried operation.",
            explicit_bucket_boundaries_advisory=list(semconv.RETRY_ATTEMPTS_BUCKETS),
        )
        self.retry_duration = self.meter.create_histogram(
            semconv.METRIC_RETRY_DURATION,
            unit="s",
            description="Duration of a retried operation, all attempts and waits included.",
            explicit_bucket_boundaries_advisory=list(semconv.RETRY_DURATION_BUCKETS),
        )
        self.breaker_calls = self.meter.create_counter(
            semconv.METRIC_BREAKER_CALLS, unit="{call}", description="Calls through a circuit breaker."
        )
        self.breaker_transitions = self.meter.create_counter(
            semconv.METRIC_BREAKER_TRANSITIONS,
            unit="{transition}",
            description="Circuit breaker state changes.",
        )
        self.meter.create_observable_gauge(
            semconv.METRIC_BREAKER_STATE,
            callbacks=[self._observe_breaker_states],
            unit="1",
            description="1 for the state each circuit breaker is in, 0 for the others.",
        )

    def recording(self, ctx: Context | None = None) -> bool:
        """Whether anything would record: decided cheaply, so that with no SDK we create nothing at all.

        Once a real provider is in place it stays (OpenTelemetry sets global providers once), so a positive answer
        is cached; a negative one is re-checked, because the app may configure its SDK after instrumenting. With the
        global providers, "no SDK yet" is two module attribute reads, inline: it is every call's cost with no SDK.

        Then, is instrumentation suppressed in `ctx` (default: the current context)? This is
        `opentelemetry.instrumentation.utils.is_instrumentation_enabled()` with one context read instead of two. Only
        the general suppression counts (contrib's HTTP suppression must not silence us); it also keeps our own OTLP
        export from tracing itself. A caller that needs the current context afterwards passes it in.
        """
        if not self._live:
            if self._uses_globals and trace._TRACER_PROVIDER is None and _metrics_internal._METER_PROVIDER is None:
                return False
            if not self._became_live():
                return False
        if self.disabled:
            return False
        if ctx is None:
            ctx = get_current()
        return not (ctx.get(_SUPPRESS_INSTRUMENTATION_KEY) or ctx.get(_SUPPRESS_INSTRUMENTATION_KEY_PLAIN))

    def may_record(self) -> bool:
        """`recording()` without its context read (is instrumentation suppressed here?): the first check of a patched
        entry point whose wrapper starts its work with `start_breaker_call` or `start_retry`, which make that read,
        so that a call reads the context once."""
        if not self._live:
            if self._uses_globals and trace._TRACER_PROVIDER is None and _metrics_internal._METER_PROVIDER is None:
                return False
            if not self._became_live():
                return False
        return not self.disabled

    def _became_live(self) -> bool:
        """The slow path of `recording()`: a provider was set since the last call, or explicit providers were given
        (then their tracer and meter tell whether they are real)."""
        if self.disabled or not self._resolve_live():
            return False
        self._went_live()
        return True

    def records(self) -> bool:
        """`recording()` for a call site outside any guard (an adapter's own wrapper deciding whether to trace):
        an error of ours there counts as "not recording", logged once, and never reaches the app."""
        try:
            return self.recording()
        except Exception:
            report_internal_error("Telemetry.recording")
            return False

    def when_live(self, callback: Callable[[], None]) -> None:
        """Run `callback` once, as soon as something records (now, if it already does). Adapters install the hooks
        that only matter while recording (attempt and transition hooks) this way, so that an app with no SDK pays
        for one patched entry point per call and nothing more."""
        with self._live_lock:
            if not self._live:
                self._when_live.append(callback)
                callback = None  # type: ignore[assignment]
        if callback is not None:
            _run_guarded(callback)
        elif not self._live and self._resolve_live():
            self._went_live()

    def _resolve_live(self) -> bool:
        return not (_is_noop_tracer(self.tracer) and _is_noop_meter(self.meter))

    def _went_live(self) -> None:
        with self._live_lock:
            if self._live:
                return
            callbacks, self._when_live = self._when_live, []
            for callback in callbacks:
                if not self.disabled:
                    _run_guarded(callback)  # runs inside the app's first call after an SDK appears
            self._live = True

    def start_retry(
        self,
        name: str,
        *,
        span_name: str | None = None,
        max_attempts: int | None = None,
        parent: Context | None = None,
        measured_delays: bool = False,
    ) -> RetryOperation | None:
        """Start observing one retried operation, or return None when nothing records (the adapter then stays out
        of the way entirely). `name` is ``retry.name`` (``module.qualname``); `span_name` the bare qualname.
        `measured_delays=True` records the gap between attempts as `retry.delay` when the library's chosen wait
        cannot be read. (HTTP requests are `core.http.start_request`'s.)"""
        if not self.recording():
            return None
        return RetryOperation.start(
            self, name, span_name=span_name, max_attempts=max_attempts, parent=parent, measured_delays=measured_delays
        )

    def record_retry(
        self, name: str, result: str, depth: int, attempts: int, seconds: float, *, budget_exhausted: bool = False
    ) -> None:
        """The metric points of one retried operation (or HTTP request) that ended: `retry.attempts` and
        `retry.duration`. `budget_exhausted`: a retry budget refused the retry that would have followed (botocore's
        retry quota); both points then carry ``retry.budget_exhausted=true``, so an alert can count them."""
        attributes = {semconv.RETRY_NAME: name, semconv.RETRY_RESULT: result}
        if budget_exhausted:
            attributes[semconv.RETRY_BUDGET_EXHAUSTED] = True
        self.retry_attempts.record(attempts, {**attributes, semconv.RETRY_DEPTH: depth})
        self.retry_duration.record(seconds, attributes)

    def start_breaker_call(
        self, entry_of: Callable[[], BreakerEntry], state: str | None, subject: object = None
    ) -> BreakerCall | None:
        """Start observing one call through the breaker whose registry entry `entry_of()` gives, admitted (so far)
        in `state`; None when nothing records. The entry is looked up only then: a call while instrumentation is
        suppressed leaves no trace, not even in the registry. `subject` is the library object by which the
        adapter's inner hooks find the call again (`current_call`)."""
        if not self.recording():
            return None
        return BreakerCall.start(self, entry_of(), state, subject)

    def _observe_breaker_states(self, _options: CallbackOptions) -> Iterable[Observation]:
        """The `circuitbreaker.state` gauge, read from the weak registry. A state the library moved to on its own (a
        timer taking a breaker from open to half_open) is first seen here, and counted as a transition here."""
        for entry in REGISTRY.live_entries(self.library):
            state = entry.refresh(self)
            if state is None:
                continue
            for candidate in semconv.BREAKER_STATES:
                yield Observation(
                    1 if candidate == state else 0,
                    {semconv.BREAKER_NAME: entry.name, semconv.BREAKER_STATE: candidate},
                )

    def record_transition(self, entry: BreakerEntry, previous: str, state: str) -> None:
        """Count one state change (with or without a span current): the `circuitbreaker.transitions` counter."""
        self.breaker_transitions.add(
            1,
            {
                semconv.BREAKER_NAME: entry.name,
                semconv.BREAKER_PREVIOUS_STATE: previous,
                semconv.BREAKER_STATE: state,
            },
        )


# At the end: these modules name Telemetry only in annotations, and the core creates their objects on every traced
# call, where an import statement inside the function would cost a module lookup each time.
from otel_resilience.core.breaker import BreakerCall  # noqa: E402
from otel_resilience.core.registry import REGISTRY  # noqa: E402
from otel_resilience.core.retry import RetryOperation  # noqa: E402
