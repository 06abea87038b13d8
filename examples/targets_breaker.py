"""The app's own circuit breaker, traced through configuration alone.

`examples/myapp/cb.py` is the classic hand-written state machine (Closed -> Open -> HalfOpen -> Closed/Open) with no
OpenTelemetry in it. Naming its call method and the attribute that holds its state makes each call a
``circuitbreaker`` span with the state it was admitted or refused in, its result, and state changes as events:

    python examples/targets_breaker.py

With no code change at all, under the launcher:

    PYTHONPATH=examples OTEL_PYTHON_RESILIENCE_BREAKER_TARGETS=myapp.cb:Breaker.call@state \\
        OTEL_TRACES_EXPORTER=console opentelemetry-instrument python your_app.py

See docs/targets.md for the syntax and the heuristics (what is read, what is inferred).
"""

from __future__ import annotations

import time

import otel_resilience

handle = otel_resilience.setup(
    exporter="console",
    service_name="targets-breaker",
    breaker_targets=["myapp.cb:Breaker.call@state"],
)

from myapp.cb import Breaker, CircuitOpenError  # noqa: E402

RESET_TIMEOUT = 0.05
"""Seconds the breaker stays open before it admits a probe (tiny, so the example runs in a blink)."""


class PaymentGateway:
    """Fails while `down` is set."""

    def __init__(self) -> None:
        self.down = True

    def charge(self, amount: int) -> str:
        if self.down:
            raise ConnectionError("payment gateway unavailable")
        return f"charged {amount}"


def attempt(breaker: Breaker, gateway: PaymentGateway, amount: int) -> None:
    try:
        print(breaker.call(gateway.charge, amount))
    except CircuitOpenError as exc:
        print("refused:", exc)
    except ConnectionError as exc:
        print("failed:", exc)


def main() -> None:
    gateway = PaymentGateway()
    breaker = Breaker(failure_threshold=2, reset_timeout=RESET_TIMEOUT)
    attempt(breaker, gateway, 10)  # closed: failure
    attempt(breaker, gateway, 20)  # closed: failure, trips the breaker (closed -> open)
    attempt(breaker, gateway, 30)  # open: rejected, the gateway is not called
    time.sleep(RESET_TIMEOUT)
    gateway.down = False
    attempt(breaker, gateway, 40)  # admitted half_open as a probe, succeeds (open -> half_open -> closed)
    print("health:", otel_resilience.breakers())  # the health snapshot: every breaker the process has used
    handle.shutdown()


if __name__ == "__main__":
    main()
