"""One `Telemetry` per instrumented library: its tracer, meter and instruments, got once at instrument time (getting
them per call is a trap: the SDK may warn from `get_tracer()`), and whether anything records. A leaf of the core:
observations (`RetryOperation`, `BreakerCall`, `HttpRequest`) start in their own modules and write through it."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Final

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import _internal as _metrics_internal
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, create_key, get_current
from opentelemetry.instrumentation.utils import _SUPPRESS_INSTRUMENTATION_KEY_PLAIN
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import INVALID_SPAN, TracerProvider, get_current_span

from otel_resilience import semconv
from otel_resilience.core._safety import report_internal_error
from otel_resilience.core.config import SETTINGS, Settings
from otel_resilience.core.registry import observe_states
from otel_resilience.core.sampling import never_recorded_under, unsampled_parents_dropped
from otel_resilience.version import __version__

_SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"

NO_SPAN: Final = Context({create_key("otel_resilience.no_span"): True})
"""The context the breaker counters are recorded in: one that holds no span. With a sampled span in the context, the
SDK's default exemplar filter (trace-based) offers the measurement to the counter's default exemplar reservoir, which
draws from the global `random` module once it holds more than it keeps: a breaker guards calls inside the app's
sampled spans, and an app that seeded `random` would draw a different sequence. With no span there, the filter offers
nothing. Not an empty `Context()`: the SDK reads ``context or get_current()``, and an empty context is falsy."""


# OpenTelemetry's private names are read in `_sdk_configured` only, but for its first test, which `recording` and
# `may_record` copy inline: with the global providers, "no SDK yet" is those two module attribute reads, made before
# any call, and it is every traced call's cost while no SDK is configured. Calling `_sdk_configured` there measured 65
# instead of 44 Python instructions per call (`python -m benchmarks.no_sdk`), against a budget of 0.5 µs.
def _sdk_configured(tracer: trace.Tracer, meter: metrics.Meter, uses_globals: bool) -> bool:
    """Whether a real SDK stands behind `tracer` and `meter` (tests/core/test_otel_internals.py fails loudly when a
    release renames the private names read here). The API's proxies resolve to the real tracer and meter once a global
    provider is set."""
    if uses_globals and trace._TRACER_PROVIDER is None and _metrics_internal._METER_PROVIDER is None:
        return False
    if isinstance(tracer, trace.ProxyTracer):
        tracer = tracer._tracer
    real_meter = getattr(meter, "_real_meter", meter)
    noop_meter = real_meter is None or isinstance(real_meter, metrics.NoOpMeter)
    return not (isinstance(tracer, trace.NoOpTracer) and noop_meter)


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
        self._sampling_of: object = None  # the real tracer `_dropped` was read from
        self._dropped = (False, False)
        self._uses_globals = tracer_provider is None and meter_provider is None
        self.on_live: Callable[[], None] | None = None
        """Run by the first check that finds something recording, before any call records (calls checking meanwhile
        wait for it): the instrumentor applies its deferred patches there. It must not raise."""
        self.disabled = False
        """Set by `uninstrument()`: what outlives the patches (closures decorated while instrumented) records nothing."""
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
            callbacks=[functools.partial(observe_states, library)],
            unit="1",
            description="1 for the state each circuit breaker is in, 0 for the others.",
        )

    def recording(self, ctx: Context | None = None) -> bool:
        """Whether anything would record: decided cheaply, so that with no SDK we create nothing at all.

        Whether an SDK stands behind us is `_became_live`'s to say, until it says yes.

        Then, is instrumentation suppressed in `ctx` (default: the current context)? This is
        `opentelemetry.instrumentation.utils.is_instrumentation_enabled()` with one context read instead of two. Only
        the general suppression counts (contrib's HTTP suppression must not silence us); it also keeps our own OTLP
        export from tracing itself. A caller that needs the current context afterwards passes it in.
        """
        if not self._live:
            if self._uses_globals and trace._TRACER_PROVIDER is None and _metrics_internal._METER_PROVIDER is None:
                return False  # no SDK (inline: see the comment above _sdk_configured)
            if not self._became_live():
                return False
        if self.disabled:
            return False
        if ctx is None:
            ctx = get_current()
        return not (ctx.get(_SUPPRESS_INSTRUMENTATION_KEY) or ctx.get(_SUPPRESS_INSTRUMENTATION_KEY_PLAIN))

    def may_record(self) -> bool:
        """`recording()` without its context read (is instrumentation suppressed here?): the first check of a patched
        entry point whose wrapper starts its work with `BreakerCall.start` or `RetryOperation.start`, which make that read,
        so that a call reads the context once."""
        if not self._live:
            if self._uses_globals and trace._TRACER_PROVIDER is None and _metrics_internal._METER_PROVIDER is None:
                return False  # no SDK (inline: see the comment above _sdk_configured)
            if not self._became_live():
                return False
        return not self.disabled

    def _became_live(self) -> bool:
        """Until something records: has a provider been set since the last call (or are the explicit providers
        real)? A negative answer is asked again at the next call, because the app may configure its SDK after
        instrumenting; a positive one is kept (OpenTelemetry sets global providers once)."""
        if self.disabled or not _sdk_configured(self.tracer, self.meter, self._uses_globals):
            return False
        if self.on_live is not None:
            self.on_live()
        self._live = True
        return True

    def records(self) -> bool:
        """`recording()` for a call site outside any guard (an adapter's own wrapper deciding whether to trace):
        an error of ours there counts as "not recording", logged once, and never reaches the app."""
        try:
            return self.recording()
        except Exception:
            report_internal_error("Telemetry.recording")
            return False

    def never_recorded_under(self, ctx: Context) -> bool:
        """Whether a span this scope starts under the span current in `ctx` can never be recorded, so that it need
        not be made (the rule: core/sampling.py). A recording parent, or none, is decided first: that is every call
        of a service that records it. What the tracer's sampler drops is read once per real tracer (a proxy tracer
        resolves to one when the global provider is set)."""
        parent = get_current_span(ctx)
        if parent is INVALID_SPAN or parent.is_recording():
            return False
        tracer = self.tracer
        if type(tracer) is trace.ProxyTracer:
            tracer = tracer._real_tracer
        if tracer is not self._sampling_of:
            self._dropped = unsampled_parents_dropped(tracer)
            self._sampling_of = tracer
        return never_recorded_under(parent, self._dropped)

    def record_retry(
        self,
        name: str,
        result: str,
        depth: int,
        attempts: int,
        seconds: float,
        context: Context | None = None,
        *,
        budget_exhausted: bool = False,
    ) -> None:
        """The metric points of one retried operation (or HTTP request) that ended: `retry.attempts` and
        `retry.duration`, recorded in `context` (the operation span's, so that an exemplar names the retried
        operation's span; default: the current context). `budget_exhausted`: a retry budget refused the retry that
        would have followed (botocore's retry quota); both points then carry ``retry.budget_exhausted=true``, so an
        alert can count them."""
        attributes: dict[str, str | bool] = {semconv.RETRY_NAME: name, semconv.RETRY_RESULT: result}
        if budget_exhausted:
            attributes[semconv.RETRY_BUDGET_EXHAUSTED] = True
        self.retry_attempts.record(attempts, {**attributes, semconv.RETRY_DEPTH: depth}, context)
        self.retry_duration.record(seconds, attributes, context)

    def record_transition(self, breaker: str, previous: str, state: str) -> None:
        """Count one state change of the breaker named `breaker`: the `circuitbreaker.transitions` counter, in a
        context without a span (`NO_SPAN`)."""
        self.breaker_transitions.add(
            1,
            {
                semconv.BREAKER_NAME: breaker,
                semconv.BREAKER_PREVIOUS_STATE: previous,
                semconv.BREAKER_STATE: state,
            },
            NO_SPAN,
        )

