"""The app's own circuit breaker, the classic hand-written state machine: Closed -> Open when failures reach a
threshold, Open -> HalfOpen once the reset timeout has passed (checked on the next call), HalfOpen -> Closed when the
probe succeeds, HalfOpen -> Open when it fails. No OpenTelemetry here: otel_resilience traces it through configuration
alone (``myapp.cb:Breaker.call@state``)."""

import enum
import threading
import time


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitOpenError(Exception):
    """Raised instead of calling the guarded function while the breaker is open."""


class Breaker:
    def __init__(self, failure_threshold=3, reset_timeout=30.0, clock=time.monotonic):
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.state = State.CLOSED
        self.failures = 0
        self._opened_at = 0.0
        self._clock = clock
        self._lock = threading.Lock()

    def call(self, fn, *args, **kwargs):
        with self._lock:
            if self.state is State.OPEN:
                if self._clock() - self._opened_at < self.reset_timeout:
                    raise CircuitOpenError("circuit open")
                self.state = State.HALF_OPEN
        try:
            result = fn(*args, **kwargs)
        except Exception:
            self._on_failure()
            raise
        self._on_success()
        return result

    def _on_failure(self):
        with self._lock:
            self.failures += 1
            if self.state is State.HALF_OPEN or self.failures >= self.failure_threshold:
                self.state = State.OPEN
                self._opened_at = self._clock()

    def _on_success(self):
        with self._lock:
            self.failures = 0
            self.state = State.CLOSED
