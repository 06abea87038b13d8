"""When a span we would start can never be recorded, so that neither it nor what it would carry is worth building.

A span the sampler drops is a `NonRecordingSpan`: it discards its attributes, events, status and end, and all it keeps
is its context (trace id, a new span id, the sampled flag off, the trace state), which propagation carries on. The
rule, for a span about to start under the span current in a context (its parent):

1. the parent is valid, not sampled, and not recording (a recording parent, e.g. one a sampler kept as
   ``RECORD_ONLY``, would collect what app code inside our span adds to "the current span": ours must stay); and
2. the tracer's sampler is one of the SDK's own whose decision for such a parent is known without asking it: the SDK's
   ``ALWAYS_OFF``, or ``ParentBased`` (and its SDK subclasses that keep its decision, e.g. ``ParentBasedTraceIdRatio``)
   whose delegate for a not-sampled *local* parent is ``ALWAYS_OFF`` (as by default), and, when the parent is remote
   (an incoming traceparent), whose delegate for a not-sampled remote parent is ``ALWAYS_OFF`` too (as by default);
3. the SDK does not count dropped spans (its opt-in internal metrics count every started span, dropped or not).

Then the span is skipped altogether: its parent's context is already what the span's would be for propagation (same
trace id, sampled flag off, same trace state; only the span id differs, and neither span is recorded anywhere), and
nothing else about it would be kept. Its children (our attempt spans, the app's own spans inside the call) then have
the parent for theirs instead of a local, not-sampled span of ours: rule 2 asks that the sampler drop them in both
cases, so no decision below changes (a remote parent is why the local delegate counts too).

Any other sampler is asked by starting the span, because its decision cannot be known in advance: ``ALWAYS_ON`` under
a sampled-out parent records the span; ``TraceIdRatioBased`` alone decides by trace id, whatever the parent; a custom
sampler may decide by name, attributes or state of its own (a rate limiter counts what it sees). When in doubt, the span is created, with everything a recorded span gets at its start (the
sampler reads the start attributes); only what a span that came back non-recording would throw away is skipped.

Reads the tracer's ``sampler`` and ``_tracer_metrics`` and the sampler's delegates (SDK names, private ones included:
a release that renames them makes every span be created again, as without this rule, and tests/test_sampling.py fail
loudly); the SDK is never imported here, only looked up in ``sys.modules`` (a tracer with a sampler is the SDK's, so
its module is loaded).
"""

from __future__ import annotations

import sys
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span

_SAMPLING = "opentelemetry.sdk.trace.sampling"
_TRACER_METRICS = "opentelemetry.sdk.trace._tracer_metrics"
_NEVER = (False, False)


def _always_off(sampler: Any, sampling: Any) -> bool:
    return (
        type(sampler) in (sampling.StaticSampler, getattr(sampling, "_AlwaysOff", sampling.StaticSampler))
        and getattr(sampler, "_decision", None) is sampling.Decision.DROP
    )


def unsampled_parents_dropped(tracer: Any) -> tuple[bool, bool]:
    """(local, remote): whether `tracer` drops every span whose parent is a local (remote) span that is not sampled,
    by rules 2 and 3 of the module docstring. (False, False) for anything it does not know, a name it reads that a
    release renamed included: then every span is created, as without this rule."""
    try:
        sampling = sys.modules.get(_SAMPLING)
        sampler = getattr(tracer, "sampler", None)
        if sampling is None or sampler is None:
            return _NEVER
        tracer_metrics = sys.modules.get(_TRACER_METRICS)  # absent from SDKs older than their internal metrics
        if tracer_metrics is not None and type(getattr(tracer, "_tracer_metrics", None)) is not tracer_metrics.NoOpTracerMetrics:
            return _NEVER  # the SDK counts started spans, dropped ones included
        if _always_off(sampler, sampling):
            return (True, True)
        if isinstance(sampler, sampling.ParentBased) and type(sampler).should_sample is sampling.ParentBased.should_sample:
            return (
                _always_off(getattr(sampler, "_local_parent_not_sampled", None), sampling),
                _always_off(getattr(sampler, "_remote_parent_not_sampled", None), sampling),
            )
    except Exception:  # (AttributeError) an SDK that is not what this reads: ask the sampler for every span
        pass
    return _NEVER


def never_recorded_under(parent: Span, dropped: tuple[bool, bool]) -> bool:
    """Whether a span started under `parent` (not recording: the caller checked) can never be recorded (rule 1 of the
    module docstring), given what the tracer drops (`unsampled_parents_dropped`)."""
    span_context = parent.get_span_context()
    if span_context.trace_flags & trace.TraceFlags.SAMPLED or not span_context.is_valid:
        return False
    # skipped, the span leaves its children (the attempts, the app's own spans) under `parent` instead of under a
    # local unsampled span of ours: they must be dropped both ways
    return dropped[0] and (dropped[1] or not span_context.is_remote)
