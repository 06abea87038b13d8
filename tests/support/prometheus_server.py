"""A real Prometheus for the tests: Debian's ``prometheus`` package (``prometheus`` and ``promtool``), which
``.ci/run`` installs when it is missing.

`tool_or_skip(name)` is what a test calls for either binary: in CI (``CI=true``) a missing binary fails the test;
elsewhere it skips, saying why. `Prometheus.start(workdir, scrape_target, rule_files)` runs one on a free loopback
port with its own configuration and storage under `workdir` (never the system service's port 9090 or data), scraping
one target every second and evaluating rules every second; `stop()` ends it. `query`, `query_range` and
`label_values` call its HTTP API and fail the test on any error Prometheus reports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.collector import _free_port, in_ci

T = TypeVar("T")
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 10.0


def tool_or_skip(name: str) -> str:
    """The path of `name` (``prometheus`` or ``promtool``); a missing one fails in CI and skips elsewhere."""
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed (Debian package `prometheus`, which .ci/run installs when run as root)"
    if in_ci():
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def poll(what: str, check: Callable[[], T | None], deadline_s: float = 60.0, every_s: float = 0.2) -> T:
    """`check()`'s first result that is not None, polled until a generous deadline (a hang guard, not a timing
    assertion); past it, the test fails saying what never happened."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {deadline_s} s")
        time.sleep(every_s)


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @classmethod
    def start(cls, workdir: Path, scrape_target: str, rule_files: list[Path], job: str) -> Prometheus:
        """Prometheus on 127.0.0.1:<free port>, scraping `scrape_target` (host:port) as `job` every second."""
        binary = tool_or_skip("prometheus")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [scrape_target]}]}],
        }
        config_file = workdir / "prometheus.yml"
        config_file.write_text(json.dumps(config))  # JSON is YAML
        port = _free_port()
        log = workdir / "prometheus.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--enable-feature=exemplar-storage",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = cls(process, f"http://127.0.0.1:{port}", log)
        try:
            poll("Prometheus ready", server._ready, _START_TIMEOUT)
        except AssertionError:
            server.stop()
            raise AssertionError(f"Prometheus did not start; its log:\n{log.read_text()}") from None
        return server

    def _ready(self) -> bool | None:
        if self.process.poll() is not None:
            raise AssertionError(f"Prometheus exited with {self.process.returncode}:\n{self.log.read_text()}")
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return True if response.status == 200 else None
        except (urllib.error.URLError, ConnectionError):
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def api(self, path: str, **params: Any) -> Any:
        """``data`` of one API call; an error Prometheus reports (a rejected query) fails the test with its text."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        assert body.get("status") == "success", f"Prometheus rejected {params}: {body}"
        return body["data"]

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """The instant vector `expr` evaluates to at Unix time `at`."""
        data = self.api("query", query=expr, time=f"{at:.3f}")
        assert data["resultType"] in ("vector", "matrix"), data
        return list(data["result"])

    def query_range(self, expr: str, start: float, end: float, step: str) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=step)
        return list(data["result"])

    def label_values(self, label: str, match: str) -> set[str]:
        return set(self.api(f"label/{label}/values", **{"match[]": match}))

    def rules(self) -> list[dict[str, Any]]:
        """Every rule Prometheus loaded, with its health and last error."""
        return [rule for group in self.api("rules")["groups"] for rule in group["rules"]]


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^{}]*\}|\[[^\[\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}


_NAME_MATCHER = re.compile(r'__name__=~"([\w|]+)"')


def queried_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers outside strings, label matchers, ranges and label
    lists that are neither functions nor keywords, and the alternatives of a ``__name__=~"a|b"`` matcher (enough for
    the dashboard's queries, which use no `@` or durations outside ranges)."""
    names = {name for alternatives in _NAME_MATCHER.findall(expr) for name in alternatives.split("|")}
    text = _LABEL_LISTS.sub(" ", _MATCHERS.sub(" ", _STRINGS.sub('""', expr)))
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if match.group() not in _KEYWORDS and not rest.startswith("(") and not match.group()[0].isdigit():
            names.add(match.group())
    return names
