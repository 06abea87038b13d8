"""One patch per patched attribute, shared by every adapter that needs it, and the very original back at the end."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any

import pytest
import stamina
import tenacity
from tenacity import AttemptManager, BaseRetrying
from tenacity.asyncio import AsyncRetrying

from otel_resilience import patching, semconv
from otel_resilience.instrumentation.stamina import StaminaInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from otel_resilience.patching import Patches
from tests.conftest import Otel
from tests.support.processes import checked, run_python

# Every attribute that the tenacity and stamina instrumentors both patch.
SHARED = [
    (BaseRetrying, "__iter__"), (AsyncRetrying, "__aiter__"), (BaseRetrying, "iter"), (AsyncRetrying, "iter"),
    (AsyncRetrying, "__anext__"), (AttemptManager, "__enter__"), (AttemptManager, "__exit__"),
]


def depth(owner: Any, name: str, original: Any) -> int:
    """How many ``__wrapped__`` steps lead from what ``owner.name`` holds to `original`."""
    current, steps = vars(owner)[name], 0
    while current is not original:
        current = current.__wrapped__
        steps += 1
    return steps


def calls(log: list[str], label: str) -> Callable[..., Any]:
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        log.append(label)
        return wrapped(*args, **kwargs)

    return wrapper


class Target:
    def method(self, x: int) -> int:
        return x + 1

    async def coroutine(self, x: int) -> int:
        return x + 2

    @staticmethod
    def static(x: int) -> int:
        return x + 3

    @classmethod
    def klass(cls, x: int) -> tuple[type, int]:
        return cls, x + 4


# --- the patching module ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["method", "coroutine", "static", "klass"])
def test_two_subscribers_share_one_patch_and_leave_in_any_order(name: str) -> None:
    original = vars(Target)[name]
    for leaving in itertools.permutations((0, 1)):
        log: list[str] = []
        patches = [Patches(), Patches()]
        patches[0].wrap(Target, name, calls(log, "first"))
        patched = vars(Target)[name]
        patches[1].wrap(Target, name, calls(log, "second"))
        assert vars(Target)[name] is patched  # the second subscriber joined the same patch
        value = getattr(Target(), name)(1)
        if inspect.iscoroutine(value):
            value = asyncio.run(value)
        assert log == ["second", "first"]  # the latest subscriber outermost, as if it had patched on top
        assert inspect.iscoroutinefunction(getattr(Target, name)) == (name == "coroutine")
        assert patches[leaving[0]].restore()
        assert vars(Target)[name] is patched
        assert patches[leaving[1]].restore()
        assert vars(Target)[name] is original


def test_enabled_check_chooses_per_call_and_wrappers_get_wrapt_arguments() -> None:
    seen: list[tuple[Any, tuple[Any, ...]]] = []
    on = [False]

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        seen.append((instance, args))
        return wrapped(*args, **kwargs) * 10

    patches = Patches()
    patches.wrap(Target, "method", wrapper, enabled=lambda: on[0])
    target = Target()
    try:
        assert target.method(1) == 2 and seen == []
        on[0] = True
        assert target.method(1) == 20 and seen == [(target, (1,))]
    finally:
        patches.restore()


def test_a_failing_enabled_check_counts_as_off(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> bool:
        raise RuntimeError("ours")

    patches = Patches()
    patches.wrap(Target, "method", calls([], "never"), enabled=broken)
    try:
        assert Target().method(1) == 2
    finally:
        patches.restore()
    assert any("instrumentation enabled check" in r.getMessage() for r in caplog.records)


def test_a_layer_patched_on_top_is_respected_and_ours_is_used_again(caplog: pytest.LogCaptureFixture) -> None:
    original = vars(Target)["method"]
    log: list[str] = []
    ours = Patches()
    ours.wrap(Target, "method", calls(log, "ours"))
    patched = vars(Target)["method"]

    def foreign(self: Target, x: int) -> int:
        log.append("foreign")
        return patched(self, x)

    foreign.__wrapped__ = patched  # type: ignore[attr-defined]
    Target.method = foreign  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, "otel_resilience"):
        assert not ours.restore()
    assert vars(Target)["method"] is foreign  # their layer stays, ours under it calls straight through
    assert Target().method(1) == 2 and log == ["foreign"]
    assert any("patched again after us" in r.getMessage() for r in caplog.records)
    again = Patches()
    again.wrap(Target, "method", calls(log, "again"))  # joins the patch under the foreign layer: no new layer
    assert depth(Target, "method", original) == 2
    Target.method = patched  # type: ignore[method-assign]  # the foreign layer leaves
    assert again.restore()
    assert vars(Target)["method"] is original


def test_a_patch_somebody_removed_is_made_anew() -> None:
    original = vars(Target)["method"]
    first = Patches()
    first.wrap(Target, "method", calls([], "first"))
    Target.method = original  # type: ignore[method-assign]  # e.g. an `unwrap` that took our layer off
    log: list[str] = []
    second = Patches()
    second.wrap(Target, "method", calls(log, "second"))
    assert Target().method(1) == 2 and log == ["second"]
    assert not first.restore()  # its patch is no longer there: nothing to put back
    assert second.restore()
    assert vars(Target)["method"] is original


def test_deferred_patches_wait_for_activate_and_keep_their_declared_order() -> None:
    original = vars(Target)["method"]
    log: list[str] = []
    first, second = Patches(), Patches()
    first.wrap(Target, "method", calls(log, "first, deferred"), deferred=True)
    second.wrap(Target, "method", calls(log, "second"))
    assert Target().method(1) == 2 and log == ["second"]
    first.activate()
    first.activate()  # once
    log.clear()
    assert Target().method(1) == 2 and log == ["second", "first, deferred"]  # declared first: innermost
    assert first.restore() and second.restore()
    assert vars(Target)["method"] is original
    late = Patches()
    late.wrap(Target, "method", calls(log, "late"), deferred=True)
    assert late.restore()
    late.activate()  # a call still in flight after uninstrument applies nothing
    assert vars(Target)["method"] is original


# --- instrumentors that share hook points ---------------------------------------------------------------------------


def retried_calls() -> None:
    """A stamina retry and a tenacity retry, each failing once."""
    failures = iter([ConnectionError("down")])

    def flaky() -> str:
        for error in failures:
            raise error
        return "ok"

    no_wait = {"wait_initial": 0.0, "wait_max": 0.0, "wait_jitter": 0.0}
    assert stamina.retry(on=ConnectionError, attempts=3, **no_wait)(flaky)() == "ok"
    failures = iter([ConnectionError("down")])
    assert tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none())(flaky)() == "ok"


def other_subscriber() -> Patches:
    """A third party on the same hook points, as a configured target naming a library's method would be."""
    patches = Patches()
    for owner, name in SHARED:
        patches.wrap(owner, name, calls([], name))
    return patches


PARTICIPANTS: dict[str, Callable[[Otel], Callable[[], object]]] = {
    "tenacity": lambda otel: (TenacityInstrumentor().instrument(**otel.kwargs()), TenacityInstrumentor().uninstrument)[1],
    "stamina": lambda otel: (StaminaInstrumentor().instrument(**otel.kwargs()), StaminaInstrumentor().uninstrument)[1],
    "other": lambda otel: other_subscriber().restore,
}


@pytest.mark.parametrize("entering", list(itertools.permutations(PARTICIPANTS)), ids="-".join)
def test_every_order_of_instrument_and_uninstrument_restores_the_originals(otel: Otel, entering: tuple[str, ...]) -> None:
    originals = {(owner, name): vars(owner)[name] for owner, name in SHARED}
    for leaving in itertools.permutations(entering):
        undo = {name: PARTICIPANTS[name](otel) for name in entering}
        assert all(depth(owner, name, originals[owner, name]) == 1 for owner, name in SHARED)  # one patch each
        otel.exporter.clear()
        retried_calls()
        scopes = sorted(s.instrumentation_scope.name for s in otel.spans() if s.name.startswith("retry "))
        assert scopes == ["otel_resilience.stamina", "otel_resilience.tenacity"]  # stamina's retry counted once
        for index, name in enumerate(leaving):
            undo[name]()
            if index < len(leaving) - 1:
                assert all(depth(owner, attr, originals[owner, attr]) == 1 for owner, attr in SHARED)
        assert all(vars(owner)[name] is original for (owner, name), original in originals.items())


def resilience_instrumentors() -> list[Any]:
    """Every instrumentor of ours, in the order the entry points list them (stamina before tenacity)."""
    return [ep.load() for ep in entry_points(group="opentelemetry_instrumentor") if ep.name.startswith("resilience_")]


def test_uninstrumenting_in_entry_point_order_leaves_no_layer_behind(otel: Otel) -> None:
    instrumentors = resilience_instrumentors()
    names = [cls.__name__ for cls in instrumentors]
    assert names.index("StaminaInstrumentor") < names.index("TenacityInstrumentor")
    originals = {(owner, name): vars(owner)[name] for owner, name in SHARED}
    for _ in range(3):
        for cls in instrumentors:
            cls().instrument(**otel.kwargs())
        retried_calls()
        assert all(depth(owner, name, originals[owner, name]) == 1 for owner, name in SHARED)
        for cls in instrumentors:
            cls().uninstrument()
        assert all(vars(owner)[name] is original for (owner, name), original in originals.items())


def layout() -> dict[str, list[str]]:
    """What the shared attributes hold: per attribute, the adapter and method of each layer in our patch, innermost
    first, and the number of ``__wrapped__`` steps to the original."""
    described = {}
    for owner, name in SHARED:
        layers = [f"{type(w.__self__).__name__}.{w.__name__}" for w in patching.subscribers(owner, name)]
        current, steps = vars(owner)[name], 0
        while hasattr(current, "__wrapped__"):
            current, steps = current.__wrapped__, steps + 1
        described[f"{owner.__qualname__}.{name}"] = [*layers, f"depth {steps}"]
    return described


FIRST_CALLS = """
import json, sys, threading
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_resilience import semconv
from otel_resilience.instrumentation.stamina import StaminaInstrumentor
from otel_resilience.instrumentation.tenacity import TenacityInstrumentor
from tests.core.test_patching import layout, retried_calls

StaminaInstrumentor().instrument()  # no SDK yet: the hooks that act only while recording wait
TenacityInstrumentor().instrument()
before = layout()
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
metrics.set_meter_provider(MeterProvider())
count = int(sys.argv[1])
barrier = threading.Barrier(count)

def first_call():
    barrier.wait()
    retried_calls()

threads = [threading.Thread(target=first_call) for _ in range(count)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
operations = [s for s in exporter.get_finished_spans() if s.name.startswith("retry ")]
attempts = sorted(s.attributes[semconv.RETRY_ATTEMPTS] for s in operations)
print(json.dumps({"before": before, "after": layout(), "attempts": attempts}))
"""


def test_many_threads_making_their_first_recorded_call_at_once() -> None:
    """Instrumented before the SDK exists, then many threads make the first recorded calls at once: the patches they
    apply end exactly as after one thread's first call, and every call is recorded whole."""
    single, many = (json.loads(checked(run_python(FIRST_CALLS, str(n))).stdout) for n in (1, 16))
    entries = {
        "BaseRetrying.__iter__": ["TenacityAdapter._iter_form", "depth 1"],
        "AsyncRetrying.__aiter__": ["TenacityAdapter._aiter_form", "depth 1"],
    }
    assert single["before"] == many["before"] == {name: entries.get(name, ["depth 0"]) for name in single["before"]}
    assert many["after"] == single["after"]
    # every layer in the order the instrumentors declared it (stamina first), whoever applied it first
    assert single["after"]["BaseRetrying.__iter__"] == [
        "_StaminaLoops._iter_form", "TenacityAdapter._iter_form", "depth 1",
    ]
    assert single["after"]["BaseRetrying.iter"] == ["_StaminaLoops._iter", "TenacityAdapter._iter", "depth 1"]
    assert single["attempts"] == [2, 2] and many["attempts"] == [2] * 32


@pytest.fixture(autouse=True)
def no_patch_left() -> Iterator[None]:
    yield
    assert patching.subscribers(Target, "method") == []
