"""The health snapshot (`otel_resilience.breakers()`) and the example JSON endpoint serving it, fetched over loopback."""

from __future__ import annotations

import gc
import importlib.util
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import aiobreaker
import pytest
from circuitbreaker import CircuitBreaker, CircuitBreakerMonitor, circuit
from purgatory import SyncCircuitBreakerFactory

import otel_resilience
from otel_resilience.instrumentation.aiobreaker import AioBreakerInstrumentor
from otel_resilience.instrumentation.circuitbreaker import CircuitBreakerInstrumentor
from otel_resilience.instrumentation.purgatory import PurgatoryInstrumentor
from tests.support.breaker_checks import outcome
from tests.conftest import Otel

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "health_endpoint.py"
INSTRUMENTORS = (CircuitBreakerInstrumentor, AioBreakerInstrumentor, PurgatoryInstrumentor)


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("health_endpoint_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def instrumented(otel: Otel, monkeypatch: pytest.MonkeyPatch) -> Iterator[Otel]:
    # circuitbreaker's own monitor holds every decorated breaker strongly, and a breaker's last failure holds the
    # frames it was raised through: a test's breakers would outlive it. Each test gets its own monitor.
    monkeypatch.setattr(CircuitBreakerMonitor, "circuit_breakers", {})
    gc.collect()  # breakers of earlier tests leave the registry
    for instrumentor in INSTRUMENTORS:
        instrumentor().instrument(**otel.kwargs())
    yield otel
    for instrumentor in INSTRUMENTORS:
        instrumentor().uninstrument()


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = load_example().make_server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def fetch(url: str) -> tuple[int, str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], json.load(error)


def test_snapshot_is_exported_at_the_top_level(instrumented: Otel) -> None:
    """The top-level `breakers()` is the live registry's snapshot: a breaker used appears with what it did, each call
    returns a new JSON-ready copy the caller may change, and a breaker that is gone leaves it."""
    assert "breakers" in otel_resilience.__all__
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=60, name="top-level")
    assert isinstance(outcome(breaker.call, lambda: 1 / 0), ZeroDivisionError)
    snapshot = otel_resilience.breakers()
    assert json.loads(json.dumps(snapshot)) == snapshot
    (mine,) = [b for b in snapshot if b["name"] == "top-level"]
    assert mine == {
        "name": "top-level", "library": "circuitbreaker", "state": "open", "failure_count": 1,
        "last_transition": mine["last_transition"],
    }
    assert isinstance(mine["last_transition"], float)
    mine["state"] = "closed"
    snapshot.clear()
    assert [b["state"] for b in otel_resilience.breakers() if b["name"] == "top-level"] == ["open"]
    del breaker
    gc.collect()
    assert [b for b in otel_resilience.breakers() if b["name"] == "top-level"] == []


OURS = ("directory", "payments", "stock")


def test_endpoint_serves_every_breaker_used(instrumented: Otel, endpoint: str) -> None:
    elsewhere = otel_resilience.breakers()  # breakers other test modules keep alive for the session
    status, content_type, document = fetch(endpoint + "/health/breakers")
    assert (status, content_type, document["breakers"]) == (200, "application/json", elsewhere)
    assert document["status"] == ("ok" if all(b["state"] == "closed" for b in elsewhere) else "degraded")

    @circuit(failure_threshold=1, recovery_timeout=60, name="payments")
    def charge() -> None:
        raise ConnectionError("gateway down")

    outcome(charge)
    directory = aiobreaker.CircuitBreaker(fail_max=3, timeout_duration=timedelta(seconds=60), name="directory")
    outcome(directory.call, lambda: 1 / 0)
    factory = SyncCircuitBreakerFactory(default_threshold=3)
    with factory.get_breaker("stock"):
        pass

    status, content_type, document = fetch(endpoint + "/health/breakers")
    assert (status, content_type, document["status"]) == (200, "application/json", "degraded")
    by_name = {b["name"]: b for b in document["breakers"] if b["name"] in OURS}
    assert sorted(by_name) == list(OURS)
    assert len(document["breakers"]) == len(elsewhere) + 3
    assert by_name["payments"] == {
        "name": "payments", "library": "circuitbreaker", "state": "open", "failure_count": 1,
        "last_transition": by_name["payments"]["last_transition"],
    }
    assert isinstance(by_name["payments"]["last_transition"], float)
    assert by_name["directory"] == {
        "name": "directory", "library": "aiobreaker", "state": "closed", "failure_count": 1, "last_transition": None,
    }
    assert by_name["stock"] == {
        "name": "stock", "library": "purgatory", "state": "closed", "failure_count": 0, "last_transition": None,
    }

    status, _, strict = fetch(endpoint + "/health/breakers?strict")
    assert (status, strict["status"]) == (503, "degraded")
    assert fetch(endpoint + "/elsewhere")[0] == 404


def test_snapshot_is_safe_while_breakers_come_and_go(instrumented: Otel) -> None:
    """Threads making, using and dropping breakers while another reads the snapshot: no error, and in the end only
    the breakers still alive are listed."""
    stop = threading.Event()
    errors: list[BaseException] = []
    snapshots = 0

    def churn(n: int) -> None:
        try:
            for i in range(200):
                breaker = CircuitBreaker(failure_threshold=1, name=f"churn-{n}-{i}")
                outcome(breaker.call, lambda: 1 / 0 if i % 2 else None)
                if i % 50 == 0:
                    gc.collect()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def read() -> None:
        nonlocal snapshots
        try:
            while not stop.is_set():
                for b in otel_resilience.breakers():
                    if b["name"].startswith("churn-"):
                        assert b["library"] == "circuitbreaker" and b["state"] in ("open", "closed")
                snapshots += 1
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    keeper = CircuitBreaker(name="kept")
    keeper.call(lambda: None)
    reader = threading.Thread(target=read)
    reader.start()
    workers = [threading.Thread(target=churn, args=(n,)) for n in range(6)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    reader.join()
    assert errors == [] and snapshots > 0
    gc.collect()
    assert [b["name"] for b in otel_resilience.breakers() if b["library"] == "circuitbreaker"] == ["kept"]
