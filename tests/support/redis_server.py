"""A real ``redis-server`` on a free loopback port, started and stopped by the test that needs it.

`redis_server_or_skip()` is what a test calls: in CI (``CI=true``) a missing ``redis-server`` fails the test
(``.ci/run`` installs it); elsewhere it skips, saying why. Never the system's service: each server runs in the
foreground on its own port and working directory, persisting nothing.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.collector import in_ci

START_GUARD = 20.0
"""Seconds after which a server that does not answer is a failure (a hang guard, not a timing measurement)."""


def free_port() -> int:
    """A loopback port nobody listens on right now (also what a refused connect is made against)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_cluster_port() -> int:
    """A free port whose cluster bus port (10000 higher, so below 55536) is free too."""
    for _ in range(1000):
        port = random.SystemRandom().randrange(20000, 45000)  # not the app's global random
        try:
            with socket.socket() as probe, socket.socket() as bus:
                probe.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise AssertionError("no free port pair for a cluster node")


class RedisServer:
    """One ``redis-server`` process; `stop()` and `start()` again keep its port."""

    def __init__(self, binary: str, *, cluster: bool = False) -> None:
        self.binary = binary
        self.cluster = cluster
        """A one-node cluster holding every slot (for cluster clients)."""
        self.port = free_cluster_port() if cluster else free_port()
        self.closed_port = free_port()
        """A loopback port with no listener, for refused connects (fixed per server, so runs compare)."""
        while self.closed_port == self.port:
            self.closed_port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="otel-resilience-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--daemonize", "no", "--loglevel", "warning",
             *(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"] if self.cluster else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_GUARD
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.process.stderr.read().decode() if self.process.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                time.sleep(0.02)
        else:
            raise AssertionError(f"redis-server did not answer on port {self.port} within {START_GUARD} s")
        if self.cluster:
            self._own_every_slot(deadline)

    def _own_every_slot(self, deadline: float) -> None:
        """Assign all slots to this node (kept in nodes.conf across a restart) and wait until the cluster is ok."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=START_GUARD) as conn:
            conn.sendall(b"CLUSTER ADDSLOTSRANGE 0 16383\r\n")
            conn.recv(64)  # +OK, or an error when a restarted node owns them already
            while time.monotonic() < deadline:
                conn.sendall(b"CLUSTER INFO\r\n")
                if b"cluster_state:ok" in conn.recv(4096):
                    return
                time.sleep(0.05)
        raise AssertionError(f"the one-node cluster on port {self.port} did not become ok within {START_GUARD} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.kill()
        process.wait(timeout=START_GUARD)
        if process.stderr is not None:
            process.stderr.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def redis_server_or_skip(*, cluster: bool = False) -> RedisServer:
    """A started server. In CI a missing ``redis-server`` fails the test; elsewhere it skips with the reason."""
    binary = shutil.which("redis-server") or next(
        (str(p) for p in (Path("/usr/bin/redis-server"), Path("/usr/sbin/redis-server")) if p.exists()), None
    )
    if binary is None:
        if in_ci():
            pytest.fail("CI=true and redis-server is not installed (.ci/run installs the Debian package)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(binary, cluster=cluster)
    server.start()
    return server
