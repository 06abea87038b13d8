"""A weak, thread-safe registry of every breaker the process has used: the last state a call saw (so that each
transition is counted once, where first observed), the `circuitbreaker.state` gauge and `otel_resilience.breakers()`.
It never keeps a breaker alive. Reading it (the gauge, a snapshot) changes nothing."""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from otel_resilience import semconv
from otel_resilience.core._safety import report_internal_error

StateReader = Callable[[Any], "str | None"]
"""Reads a breaker's state, as a contract state name, from what the library already resolved: never through a getter
that writes state, notifies listeners or reads storage."""


class BreakerEntry:
    """What we know of one breaker: its name, library, last seen state and failure count, last transition time."""

    __slots__ = (
        "name", "span_name", "library", "state", "failure_count", "last_transition", "_owner", "_read_state",
        "__weakref__",
    )

    def __init__(self, owner: Any, name: str, library: str, read_state: StateReader | None) -> None:
        self.name = name
        self.span_name = f"{semconv.BREAKER_SPAN_PREFIX} {name}"  # made once: every call's span has it
        self.library = library
        self.state: str | None = _first_reading(read_state, owner)  # a snapshot never shows a used breaker stateless
        self.failure_count: int | None = None
        self.last_transition: float | None = None
        self._owner = _weak(owner)
        self._read_state = read_state

    @property
    def owner(self) -> Any:
        return self._owner() if self._owner is not None else None

    def observe(self, state: str | None) -> str | None:
        """A call sees the breaker in `state` now: if we knew it in another state, that is a transition, and the
        previous state is returned (exactly once per change: the caller counts it); otherwise None.

        Many threads may see the same change at once: the compare-and-set is locked (only when the state differs
        from the last seen one, which is rare), so each change goes to exactly one of them."""
        if state is None or state == self.state:
            return None
        with _TRANSITIONS_LOCK:
            previous = self.state
            if state == previous:
                return None
            self.state = state
            if previous is None:
                return None
            self.last_transition = time.time()
        return previous

    def transition(self, previous: str, state: str) -> bool:
        """The library reported `previous` -> `state` (its own notification, made once per change): True when the
        caller is to count it."""
        if previous == state:
            return False
        with _TRANSITIONS_LOCK:
            self.state = state
            self.last_transition = time.time()
        return True

    def current_state(self) -> str | None:
        """The state as the library has it now, where it can be read without side effects, else the last one a call
        saw. Only reads: the gauge calls it on the metric reader's thread."""
        owner = self.owner
        if self._read_state is not None and owner is not None:
            return self._read_state(owner) or self.state
        return self.state

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "library": self.library,
            "state": self.state,
            "failure_count": self.failure_count,
            "last_transition": self.last_transition,
        }


_TRANSITIONS_LOCK = threading.Lock()
"""Guards the last seen state of every entry while a change is detected (changes are rare; reads take no lock)."""


def _first_reading(read_state: StateReader | None, owner: Any) -> str | None:
    if read_state is None:
        return None
    try:
        return read_state(owner)
    except Exception:
        report_internal_error("otel_resilience.core.registry.read_state")
        return None


def _weak(owner: Any) -> weakref.ref[Any] | None:
    try:
        return weakref.ref(owner)
    except TypeError:
        return None


class BreakerRegistry:
    """Entries by (breaker, key), held weakly, safe to use from any thread.

    A breaker's finalizer may run inside any allocation, on any thread, including one made while this registry's
    lock is held (a garbage collection triggered there). So finalizers never take the lock: they only queue the
    dead entry's identity, and the queue is drained under the lock by the next lookup or snapshot. Since an `id()`
    may be reused before that, a lookup also checks that the entry's breaker is the very object asked about."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, Hashable], BreakerEntry] = {}
        self._lock = threading.Lock()
        self._dead: deque[tuple[int, Hashable]] = deque()  # appended by finalizers, without the lock

    def entry(
        self,
        owner: Any,
        library: str,
        name_of: Callable[[Any, Any], str],
        guarded: Any = None,
        *,
        key: Hashable = None,
        read_state: StateReader | None = None,
    ) -> BreakerEntry:
        """The entry of the breaker `owner` (with `key` where one owner holds many breakers, as purgatory's
        factory does), made on first use with the name ``name_of(owner, guarded)`` returns: an unnamed breaker is
        named once, for its lifetime, after the first guarded function."""
        ident = (id(owner), key)
        entry = self._entries.get(ident)
        if entry is not None and entry._owner is not None and entry._owner() is owner:
            return entry
        fresh = BreakerEntry(owner, name_of(owner, guarded), library, read_state)
        if fresh._owner is None:
            return fresh  # not weakly referenceable: observed per call, never kept
        with self._lock:
            self._purge()
            existing = self._entries.get(ident)
            if existing is not None and existing.owner is owner:
                return existing
            self._entries[ident] = fresh
        weakref.finalize(owner, self._dead.append, ident).atexit = False
        return fresh

    def _purge(self) -> None:
        """Drop the entries whose breaker was collected (with the lock held)."""
        while self._dead:
            ident = self._dead.popleft()
            entry = self._entries.get(ident)
            if entry is not None and entry.owner is None:
                del self._entries[ident]

    def live_entries(self, library: str | None = None) -> list[BreakerEntry]:
        with self._lock:
            self._purge()
            entries = list(self._entries.values())
        return [e for e in entries if (library is None or e.library == library) and e.owner is not None]


REGISTRY = BreakerRegistry()


def observe_states(library: str, _options: CallbackOptions) -> Iterable[Observation]:
    """The `circuitbreaker.state` gauge of one instrumentation scope: 1 for each live breaker's current state, 0 for
    the others. It only reads: a transition is counted by the first call that sees it (docs/telemetry.md)."""
    for entry in REGISTRY.live_entries(library):
        try:
            state = entry.current_state()
        except Exception:
            report_internal_error("otel_resilience.core.registry: reading a breaker's state")
            continue
        if state is None:
            continue
        for candidate in semconv.BREAKER_STATES:
            yield Observation(
                1 if candidate == state else 0, {semconv.BREAKER_NAME: entry.name, semconv.BREAKER_STATE: candidate}
            )


def breakers() -> list[dict[str, Any]]:
    """A health snapshot of every live breaker this process has used: name, library, state, failure count and the
    time (seconds since the epoch) of its last transition."""
    return [entry.snapshot() for entry in REGISTRY.live_entries()]
