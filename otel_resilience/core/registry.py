"""A weak, thread-safe registry of every circuit breaker the process has used.

It feeds the `circuitbreaker.state` gauge and the health snapshot (`otel_resilience.breakers()`), and remembers the
last state seen of each breaker, which is how a transition is counted exactly once, where it is first observed. It
never keeps a breaker alive: entries go when their breaker is garbage collected.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from otel_resilience.core._safety import never_raises

if TYPE_CHECKING:
    from otel_resilience.core.breaker import BreakerCall
    from otel_resilience.core.telemetry import Telemetry

StateReader = Callable[[Any], "str | None"]
"""Reads a breaker's state, as a contract state name, from what the library already resolved: never through a getter
that writes state, notifies listeners or reads storage."""


class BreakerEntry:
    """What we know of one breaker: its name, library, last seen state and failure count, last transition time."""

    __slots__ = ("name", "library", "state", "failure_count", "last_transition", "_owner", "_read_state", "__weakref__")

    def __init__(self, owner: Any, name: str, library: str, read_state: StateReader | None) -> None:
        self.name = name
        self.library = library
        self.state: str | None = None
        self.failure_count: int | None = None
        self.last_transition: float | None = None
        self._owner = _weak(owner)
        self._read_state = read_state

    @property
    def owner(self) -> Any:
        return self._owner() if self._owner is not None else None

    def observe(self, telemetry: Telemetry, state: str | None, call: BreakerCall | None = None) -> None:
        """The breaker is seen in `state` now; if we knew it in another state, that is a transition, counted here.

        Many threads may see the same change at once: the compare-and-set is locked (only when the state differs
        from the last seen one, which is rare), so each change is counted by exactly one of them."""
        if state is None or state == self.state:
            return
        with _TRANSITIONS_LOCK:
            previous = self.state
            if state == previous:
                return
            self.state = state
            if previous is None:
                return
            self.last_transition = time.time()
        self._counted(telemetry, previous, state, call)

    def transition(
        self, telemetry: Telemetry, previous: str, state: str, call: BreakerCall | None = None
    ) -> None:
        """The library reported `previous` → `state` (from its own notification, made once per change): count it,
        and put the event on the span of the call that caused it, if any."""
        if previous == state:
            return
        with _TRANSITIONS_LOCK:
            self.state = state
            self.last_transition = time.time()
        self._counted(telemetry, previous, state, call)

    def _counted(self, telemetry: Telemetry, previous: str, state: str, call: BreakerCall | None) -> None:
        telemetry.record_transition(self, previous, state)
        if call is not None:
            call.add_state_change(previous, state)

    def refresh(self, telemetry: Telemetry) -> str | None:
        """Re-read the state where the library allows it without side effects (for the gauge)."""
        owner = self.owner
        if self._read_state is not None and owner is not None:
            self.observe(telemetry, self._read_state(owner))
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


def _weak(owner: Any) -> weakref.ref[Any] | None:
    try:
        return weakref.ref(owner)
    except TypeError:
        return None


class BreakerRegistry:
    def __init__(self) -> None:
        self._entries: dict[tuple[int, Hashable], BreakerEntry] = {}
        self._lock = threading.Lock()

    def entry(
        self,
        owner: Any,
        library: str,
        name: Callable[[], str],
        *,
        key: Hashable = None,
        read_state: StateReader | None = None,
    ) -> BreakerEntry:
        """The entry of the breaker `owner` (with `key` where one owner holds many breakers, as purgatory's
        factory does), made on first use with the name `name()` returns: an unnamed breaker is named once, for its
        lifetime, after the first guarded function."""
        ident = (id(owner), key)
        entry = self._entries.get(ident)
        if entry is not None:
            return entry
        entry = BreakerEntry(owner, name(), library, read_state)
        if entry._owner is None:
            return entry  # not weakly referenceable: observed per call, never kept
        with self._lock:
            existing = self._entries.setdefault(ident, entry)
            if existing is entry:
                weakref.finalize(owner, self._forget, ident)
        return existing

    @never_raises
    def _forget(self, ident: tuple[int, Hashable]) -> None:
        with self._lock:
            self._entries.pop(ident, None)

    def live_entries(self, library: str | None = None) -> list[BreakerEntry]:
        with self._lock:
            entries = list(self._entries.values())
        return [e for e in entries if (library is None or e.library == library) and e.owner is not None]


REGISTRY = BreakerRegistry()


def breakers() -> list[dict[str, Any]]:
    """A health snapshot of every live breaker this process has used: name, library, state, failure count and the
    time (seconds since the epoch) of its last transition."""
    return [entry.snapshot() for entry in REGISTRY.live_entries()]
