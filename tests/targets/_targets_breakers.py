"""Hand-written circuit breakers in the forms breaker targets support, each keeping its state where (and as) real apps
do. No OpenTelemetry here. Tests load a fresh copy under a new module name (`AppModules.fresh`).

Every form runs the same classic state machine (`_admit`/`_record`) on a "box": the object holding its state.
"""

import enum
import sys
import time


class CircuitOpenError(Exception):
    pass


REFUSE = object()

LOWER = {"closed": "closed", "open": "open", "half_open": "half-open"}
SCREAMING = {"closed": "CLOSED", "open": "OPEN", "half_open": "HALF_OPEN"}
CAMEL = {"closed": "Closed", "open": "Open", "half_open": "HalfOpen"}


def _admit(box):
    if box.state == box.spelling["open"]:
        if box.clock() - box.opened_at < box.reset_timeout:
            return False
        box.state = box.spelling["half_open"]
    return True


def _record(box, ok):
    if ok:
        box.failures = 0
        box.state = box.spelling["closed"]
        return
    box.failures += 1
    if box.state == box.spelling["half_open"] or box.failures >= box.threshold:
        box.state = box.spelling["open"]
        box.opened_at = box.clock()


def _guard(box, fn, args, kwargs, fallback=REFUSE):
    if not _admit(box):
        if fallback is REFUSE:
            raise CircuitOpenError("circuit open")
        return fallback() if callable(fallback) else fallback
    try:
        result = fn(*args, **kwargs)
    except Exception:
        _record(box, False)
        raise
    _record(box, True)
    return result


def _setup(box, spelling, threshold, reset_timeout, clock):
    box.spelling = spelling
    box.state = spelling["closed"]
    box.failures = 0
    box.opened_at = 0.0
    box.threshold = threshold
    box.reset_timeout = reset_timeout
    box.clock = clock


class NamedBreaker:
    """String states in SCREAMING_CASE, a `name`, and a fallback instead of an exception while open."""

    def __init__(self, name, threshold=1, reset_timeout=10.0, clock=time.monotonic):
        self.name = name
        _setup(self, SCREAMING, threshold, reset_timeout, clock)

    def call(self, fn, *args, **kwargs):
        return _guard(self, fn, args, kwargs)

    def call_or(self, fallback, fn, *args, **kwargs):
        """The first callable argument is the fallback: configure the guarded one as ``:fn``."""
        return _guard(self, fn, args, kwargs, fallback=fallback)


class _Impl:
    pass


class NestedStateBreaker:
    """The state lives one object deeper: ``@_impl.state``."""

    def __init__(self, threshold=1, reset_timeout=10.0, clock=time.monotonic):
        self._impl = _Impl()
        _setup(self._impl, LOWER, threshold, reset_timeout, clock)

    def call(self, fn, *args, **kwargs):
        return _guard(self._impl, fn, args, kwargs)


class State(enum.Enum):
    CLOSED = 1
    OPEN = 2
    HALF_OPEN = 3


ENUM = {"closed": State.CLOSED, "open": State.OPEN, "half_open": State.HALF_OPEN}


class AsyncBreaker:
    """An async call method; the state is an enum whose names are the states."""

    def __init__(self, threshold=1, reset_timeout=10.0, clock=time.monotonic):
        _setup(self, ENUM, threshold, reset_timeout, clock)

    async def call(self, fn, *args, **kwargs):
        if not _admit(self):
            raise CircuitOpenError("circuit open")
        try:
            result = await fn(*args, **kwargs)
        except Exception:
            _record(self, False)
            raise
        _record(self, True)
        return result


class SharedBreaker:
    """One breaker for the whole class: the state is a class attribute, the call methods static or class methods."""

    @classmethod
    def call(cls, fn, *args, **kwargs):
        return _guard(cls, fn, args, kwargs)

    @staticmethod
    def guard(fn, *args, **kwargs):
        return _guard(SharedBreaker, fn, args, kwargs)


_setup(SharedBreaker, CAMEL, 1, 10.0, time.monotonic)

_setup(sys.modules[__name__], LOWER, 1, 10.0, time.monotonic)


def guarded_call(fn, *args, **kwargs):
    """A module-level breaker: its state is the module's `state`."""
    return _guard(sys.modules[__name__], fn, args, kwargs)


class TimedBreaker:
    """Like the circuitbreaker library: half-open is not stored but derived from the time, in a property."""

    def __init__(self, threshold=1, reset_timeout=10.0, clock=time.monotonic):
        _setup(self, LOWER, threshold, reset_timeout, clock)

    @property
    def current(self):
        if self.state == "open" and self.clock() - self.opened_at >= self.reset_timeout:
            return "half-open"
        return self.state

    def call(self, fn, *args, **kwargs):
        return _guard(self, fn, args, kwargs)
