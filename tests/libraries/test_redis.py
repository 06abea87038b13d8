"""redis-py's retries against a real ``redis-server`` (started and stopped by each test on a free loopback port), alone
and beside contrib's redis instrumentation: the exact spans, the metric points, contrib's spans left as contrib made
them, and the app's view unchanged (values, exceptions, the waits redis slept).

Scenarios: a command that succeeds at once (no span of ours), a connect refused on a closed loopback port, and a
server stopped mid-run (SIGSTOP: the command's read times out and redis retries it) that comes back during redis's
first wait or stays stopped. redis's sleeps are recorded (never slept) by patching the ``sleep`` its retry module
calls; they also resume the stopped server, so that nothing here depends on timing.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.retry
import redis.connection
import redis.retry
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from redis.backoff import ConstantBackoff, EqualJitterBackoff
from redis.cluster import RedisCluster

from otel_resilience import semconv
from otel_resilience.instrumentation.redis import RedisRetryInstrumentor
from otel_resilience.instrumentation.redis._adapter import loop_name
from tests.conftest import Otel
from tests.support.evidence import children, fresh_otel
from tests.support.redis_server import RedisServer, free_port, redis_server_or_skip

SCOPE = "otel_resilience.redis"
TIMEOUT = 0.3
"""The client's socket timeout: how a read from the stopped server fails (real time, not asserted on)."""


@pytest.fixture
def server() -> Iterator[RedisServer]:
    started = redis_server_or_skip()
    yield started
    started.close()


@pytest.fixture
def cluster_server() -> Iterator[RedisServer]:
    started = redis_server_or_skip(cluster=True)
    yield started
    started.close()


@dataclass
class Observed:
    """What the app saw: the values returned, the exception raised (type and message), and redis's waits."""

    values: list[Any]
    error: tuple[type[BaseException], str] | None
    sleeps: list[float]


class World:
    """One run: redis's sleeps recorded; the `resume_after`-th wait resumes a stopped server."""

    def __init__(self, server: RedisServer, resume_after: int | None = None) -> None:
        self.server = server
        self.sleeps: list[float] = []
        self.resume_after = resume_after

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if len(self.sleeps) == self.resume_after:
            self.resume()

    async def async_sleep(self, seconds: float) -> None:
        self.sleep(seconds)

    def pause(self) -> None:
        assert self.server.process is not None
        self.server.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.server.process is not None:
            self.server.process.send_signal(signal.SIGCONT)

    def observe(self, run: Callable[[World], list[Any]]) -> Observed:
        values: list[Any] = []
        error = None
        with pytest.MonkeyPatch.context() as patched:
            patched.setattr(redis.retry, "sleep", self.sleep)
            patched.setattr(redis.asyncio.retry, "sleep", self.async_sleep)
            try:
                values = run(self)
            except Exception as exc:  # noqa: BLE001 - the app's view of a failure is part of what is compared
                error = (type(exc), str(exc))
            finally:
                self.resume()
        return Observed(values, error, self.sleeps)


# --- scenarios: what an app does ---------------------------------------------------------------------------------------


def policy() -> redis.retry.Retry:
    return redis.retry.Retry(ConstantBackoff(0.01), 2)


RETRIED = {"retry_on_error": [redis.ConnectionError, redis.TimeoutError]}
"""Before redis 6 a client used its ``retry`` only when told what to retry on; since, this only repeats the default."""


def first_try(world: World) -> list[Any]:
    client = redis.Redis(port=world.server.port, retry=policy(), **RETRIED)
    return [client.set("user:1", "ada"), client.get("user:1"), client.ping()]


def refused(world: World) -> list[Any]:
    client = redis.Redis(port=world.server.closed_port, retry=policy(), **RETRIED)
    return [client.ping()]


def stopped(world: World) -> list[Any]:
    client = redis.Redis(port=world.server.port, retry=policy(), socket_timeout=TIMEOUT, **RETRIED)
    client.set("user:1", "ada")
    world.pause()
    return [client.get("user:1")]


def cluster_transaction(world: World) -> list[Any]:
    """A cluster client's transaction (cluster clients run it in ``Retry.call_with_retry``) on a stopped node."""
    client = RedisCluster(host="127.0.0.1", port=world.server.port, retry=policy(), socket_timeout=TIMEOUT, **RETRIED)
    try:
        client.set("user:1", "ada")
        world.pause()
        with client.pipeline(transaction=True) as pipe:
            pipe.set("user:1", "grace")
            pipe.get("user:1")
            return list(pipe.execute())
    finally:
        client.close()


def stopped_async(world: World) -> list[Any]:
    async def run() -> list[Any]:
        client = redis.asyncio.Redis(
            port=world.server.port, retry=redis.asyncio.retry.Retry(ConstantBackoff(0.01), 2), socket_timeout=TIMEOUT,
            **RETRIED,
        )
        try:
            await client.set("user:1", "ada")
            world.pause()
            return [await client.get("user:1")]
        finally:
            await client.aclose()

    return asyncio.run(run())


def refused_async(world: World) -> list[Any]:
    async def run() -> list[Any]:
        client = redis.asyncio.Redis(port=world.server.closed_port, retry=redis.asyncio.retry.Retry(ConstantBackoff(0.01), 2), **RETRIED)
        try:
            return [await client.ping()]
        finally:
            await client.aclose()

    return asyncio.run(run())


# --- running a scenario bare, alone, and beside contrib -------------------------------------------------------------------


@contextmanager
def instrumentation(ours: bool, contrib: bool) -> Iterator[Otel]:
    otel = fresh_otel()
    with ExitStack() as stack:
        if contrib:
            RedisInstrumentor().instrument(**otel.kwargs())
            stack.callback(RedisInstrumentor().uninstrument)
        if ours:
            RedisRetryInstrumentor().instrument(**otel.kwargs())
            stack.callback(RedisRetryInstrumentor().uninstrument)
        yield otel


def run(server: RedisServer, scenario: Callable[[World], list[Any]], *, ours: bool, contrib: bool,
        resume_after: int | None = None) -> tuple[Observed, Otel]:
    with instrumentation(ours, contrib) as otel:
        observed = World(server, resume_after).observe(scenario)
    return observed, otel


def ours_of(otel: Otel) -> list[ReadableSpan]:
    return [s for s in otel.spans() if s.instrumentation_scope.name == SCOPE]


def contrib_of(otel: Otel) -> list[ReadableSpan]:
    return [s for s in otel.spans() if s.instrumentation_scope.name != SCOPE]


def contrib_view(otel: Otel) -> list[tuple[Any, ...]]:
    """What contrib made, comparable across runs (ids and times aside)."""
    return [(s.name, s.kind, dict(s.attributes), s.status.status_code, [e.name for e in s.events]) for s in contrib_of(otel)]


def retry_points(otel: Otel) -> list[tuple[dict[str, Any], int, float]]:
    points = [(dict(p.attributes), p.count, p.sum) for p in otel.metric_points(semconv.METRIC_RETRY_ATTEMPTS)]
    return sorted(points, key=lambda p: sorted(p[0].items()))


def check_identity(server: RedisServer, scenario: Callable[[World], list[Any]], resume_after: int | None,
                   contrib: bool) -> tuple[Observed, Otel]:
    """Run bare, then with contrib alone (when asked), then instrumented: the app sees the same, and contrib's spans
    are exactly what contrib alone made."""
    bare, _ = run(server, scenario, ours=False, contrib=False, resume_after=resume_after)
    observed, otel = run(server, scenario, ours=True, contrib=contrib, resume_after=resume_after)
    assert observed == bare
    if contrib:
        _, contrib_alone = run(server, scenario, ours=False, contrib=True, resume_after=resume_after)
        assert contrib_view(otel) == contrib_view(contrib_alone)
        assert contrib_view(otel)  # contrib did trace the commands
    return observed, otel


def operation(otel: Otel, name: str, contrib: bool) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """Our one operation span `retry {name}` and its attempts; beside contrib it hangs under contrib's span for the
    command, which our spans never replace."""
    ours = ours_of(otel)
    (op,) = [s for s in ours if s.name == f"retry {name}"]
    attempts = children(ours, op)
    assert {s.context.span_id for s in ours} == {op.context.span_id} | {a.context.span_id for a in attempts}
    assert all(s.kind is SpanKind.INTERNAL for s in ours)
    if contrib:
        assert op.parent is not None
        (parent,) = [s for s in contrib_of(otel) if s.context.span_id == op.parent.span_id]
        assert parent.kind is SpanKind.CLIENT
    else:
        assert op.parent is None
    return op, attempts


# --- the cases ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("contrib", [False, True], ids=["alone", "beside_contrib"])
def test_a_first_try_success_costs_no_span_and_no_point(server: RedisServer, contrib: bool) -> None:
    observed, otel = check_identity(server, first_try, None, contrib)
    assert observed == Observed([True, b"ada", True], None, [])
    assert ours_of(otel) == []
    assert retry_points(otel) == []
    if contrib:
        assert [s.name for s in contrib_of(otel)] == ["SET", "GET", "PING"]


@pytest.mark.parametrize("scenario", [refused, refused_async])
@pytest.mark.parametrize("contrib", [False, True], ids=["alone", "beside_contrib"])
def test_refused_connects_are_a_connect_operation_exhausted(
    server: RedisServer, scenario: Callable[[World], list[Any]], contrib: bool
) -> None:
    observed, otel = check_identity(server, scenario, None, contrib)
    assert observed.error is not None and observed.error[0] is redis.ConnectionError
    assert observed.sleeps == [0.01, 0.01]
    op, attempts = operation(otel, "connect", contrib)
    assert dict(op.attributes) == {
        semconv.RETRY_NAME: "redis.connect",
        semconv.RETRY_DEPTH: 1,
        semconv.RETRY_MAX_ATTEMPTS: 3,
        semconv.RETRY_ATTEMPTS: 3,
        semconv.RETRY_RESULT: semconv.RESULT_EXHAUSTED,
        semconv.RETRY_TOTAL_DELAY: pytest.approx(0.02),
        semconv.ERROR_TYPE: "redis.exceptions.ConnectionError",
    }
    assert op.status.status_code is StatusCode.ERROR
    assert [a.name for a in attempts] == ["connect"] * 3
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [0.01, 0.01, None]
    assert [a.attributes[semconv.ERROR_TYPE] for a in attempts] == ["redis.exceptions.ConnectionError"] * 3
    assert all(a.status.status_code is StatusCode.ERROR for a in attempts)
    # The first attempt ran before the call was known to be retried: its span starts with the operation.
    assert attempts[0].start_time == op.start_time
    assert retry_points(otel) == [
        ({semconv.RETRY_NAME: "redis.connect", semconv.RETRY_RESULT: semconv.RESULT_EXHAUSTED, semconv.RETRY_DEPTH: 1}, 1, 3)
    ]


@pytest.mark.parametrize("scenario", [stopped, stopped_async])
@pytest.mark.parametrize("contrib", [False, True], ids=["alone", "beside_contrib"])
def test_a_command_on_a_stopped_server_is_retried_and_recovers(
    server: RedisServer, scenario: Callable[[World], list[Any]], contrib: bool
) -> None:
    observed, otel = check_identity(server, scenario, 1, contrib)
    assert observed == Observed([b"ada"], None, [0.01])
    op, attempts = operation(otel, "GET", contrib)
    assert op.attributes[semconv.RETRY_NAME] == "redis.GET"
    assert (op.attributes[semconv.RETRY_ATTEMPTS], op.attributes[semconv.RETRY_RESULT]) == (2, semconv.RESULT_SUCCESS)
    assert op.status.status_code is StatusCode.UNSET
    assert [a.name for a in attempts] == ["GET", "GET"]
    assert attempts[0].attributes[semconv.ERROR_TYPE] == "redis.exceptions.TimeoutError"
    assert attempts[0].attributes[semconv.RETRY_DELAY] == 0.01
    assert semconv.ERROR_TYPE not in attempts[1].attributes and attempts[1].status.status_code is StatusCode.UNSET
    assert retry_points(otel) == [
        ({semconv.RETRY_NAME: "redis.GET", semconv.RETRY_RESULT: semconv.RESULT_SUCCESS, semconv.RETRY_DEPTH: 1}, 1, 2)
    ]


@pytest.mark.parametrize("contrib", [False, True], ids=["alone", "beside_contrib"])
def test_a_command_on_a_server_that_stays_stopped_is_exhausted(server: RedisServer, contrib: bool) -> None:
    observed, otel = check_identity(server, stopped, None, contrib)
    assert observed.error is not None and observed.error[0] is redis.TimeoutError
    assert observed.sleeps == [0.01, 0.01]
    op, attempts = operation(otel, "GET", contrib)
    assert (op.attributes[semconv.RETRY_ATTEMPTS], op.attributes[semconv.RETRY_RESULT]) == (3, semconv.RESULT_EXHAUSTED)
    assert op.attributes[semconv.ERROR_TYPE] == "redis.exceptions.TimeoutError"
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [0.01, 0.01, None]


@pytest.mark.parametrize("contrib", [False, True], ids=["alone", "beside_contrib"])
def test_a_cluster_transaction_on_a_stopped_node_is_retried(cluster_server: RedisServer, contrib: bool) -> None:
    observed, otel = check_identity(cluster_server, cluster_transaction, 1, contrib)
    assert observed == Observed([b"OK", b"grace"], None, [0.01])
    ours = ours_of(otel)
    (op,) = [s for s in ours if s.name == "retry transaction"]
    attempts = children(ours, op)
    assert (op.attributes[semconv.RETRY_NAME], op.attributes[semconv.RETRY_RESULT]) == ("redis.transaction", "success")
    assert [a.attributes.get(semconv.ERROR_TYPE) for a in attempts] == ["redis.exceptions.TimeoutError", None]
    assert attempts[0].attributes[semconv.RETRY_DELAY] == 0.01


def test_waits_are_the_ones_redis_drew(server: RedisServer) -> None:
    """A jittered backoff: the delay on each attempt is the wait redis slept, never recomputed."""

    def jittered(world: World) -> list[Any]:
        client = redis.Redis(port=world.server.closed_port, retry=redis.retry.Retry(EqualJitterBackoff(cap=0.05, base=0.01), 3), **RETRIED)
        return [client.ping()]

    with instrumentation(True, False) as otel:
        observed = World(server).observe(jittered)
    op, attempts = operation(otel, "connect", False)
    assert len(observed.sleeps) == 3
    assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [*observed.sleeps, None]
    assert op.attributes[semconv.RETRY_TOTAL_DELAY] == pytest.approx(sum(observed.sleeps))


def test_clients_and_policies_made_before_instrumenting_are_covered(server: RedisServer) -> None:
    client = redis.Redis(port=server.closed_port, retry=policy(), **RETRIED)
    with instrumentation(True, False) as otel:
        World(server).observe(lambda world: [client.ping()])
    op, attempts = operation(otel, "connect", False)
    assert len(attempts) == 3


def test_uninstrument_restores_the_originals() -> None:
    originals = (vars(redis.retry.Retry)["call_with_retry"], vars(redis.asyncio.retry.Retry)["call_with_retry"],
                 vars(ConstantBackoff)["compute"])
    with instrumentation(True, False):
        assert vars(redis.retry.Retry)["call_with_retry"] is not originals[0]
    assert (vars(redis.retry.Retry)["call_with_retry"], vars(redis.asyncio.retry.Retry)["call_with_retry"],
            vars(ConstantBackoff)["compute"]) == originals


def test_names_come_from_the_command() -> None:
    command_name, args = "GET", ("GET", "user:1")
    conn = object()
    assert loop_name(lambda: (conn, command_name)) == "GET"
    assert loop_name(lambda: args) == "GET"  # cluster clients close over the command's args
    assert loop_name(redis.connection.Connection(port=free_port())._send_ping) == "health_check"


def test_threads_each_get_their_own_operation(server: RedisServer) -> None:
    """Four threads' commands fail at once on the same closed port: four operations, each with its own attempts and
    waits (the loop in flight is found per thread)."""
    import threading

    def refused_in_threads(world: World) -> list[Any]:
        errors: list[str] = []

        def one() -> None:
            try:
                redis.Redis(port=world.server.closed_port, retry=policy(), **RETRIED).ping()
            except redis.ConnectionError as exc:
                errors.append(type(exc).__name__)

        workers = [threading.Thread(target=one) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
        return errors

    with instrumentation(True, False) as otel:
        observed = World(server).observe(refused_in_threads)
    assert observed.values == ["ConnectionError"] * 4 and len(observed.sleeps) == 8
    ops = [s for s in ours_of(otel) if s.name == "retry connect"]
    assert len(ops) == 4
    for op in ops:
        attempts = children(ours_of(otel), op)
        assert [a.attributes.get(semconv.RETRY_DELAY) for a in attempts] == [0.01, 0.01, None]
        assert op.attributes[semconv.RETRY_TOTAL_DELAY] == pytest.approx(0.02)
