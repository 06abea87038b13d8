"""Run the whole benchmark suite once and write `docs/performance.md`: every figure as a ratio beside its target.

    python -m benchmarks.report            # or: ./bench

All variants of a scenario run in the same process and the same run, and only ratios (or differences) between them
are reported, so the machine's speed mostly cancels out. The machine is shared and noisy: nothing here fails on a
missed target; the report says which targets were met in this run.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Targets from issue 6: span-tree ratios by scenario (default 1.10), and at most 0.5 µs added per call with no SDK.
RATIO_TARGETS = {"fail_twice": 1.15}
DEFAULT_RATIO_TARGET = 1.10
NO_SDK_BUDGET_US = 0.5
HTTP_ATTEMPT_VS_CONTRIB_TARGET = 0.6  # issue 5: CPU of one attempt span of ours ÷ contrib's per-request cost


@dataclass
class Row:
    group: str
    variants: dict[str, float]  # variant -> median seconds
    attempts: int = 1  # attempts one call makes (HTTP scenarios)

    def ratio_target(self) -> float:
        return next((t for key, t in RATIO_TARGETS.items() if key in self.group), DEFAULT_RATIO_TARGET)


def run(json_path: Path, extra: list[str]) -> None:
    command = [
        sys.executable, "-m", "pytest", str(ROOT / "benchmarks"), "-q", "-p", "no:cacheprovider",
        "--benchmark-enable", "--benchmark-only", f"--benchmark-json={json_path}", "--benchmark-min-rounds=200",
        "--benchmark-max-time=1", "--benchmark-warmup=on", *extra,
    ]
    subprocess.run(command, cwd=ROOT, check=True)


def rows(json_path: Path) -> list[Row]:
    data = json.loads(json_path.read_text())
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    attempts: dict[str, int] = {}
    for bench in data["benchmarks"]:
        groups[bench["group"]][bench["extra_info"]["variant"]] = bench["stats"]["median"]
        attempts[bench["group"]] = bench["extra_info"].get("attempts", 1)
    return [Row(group, variants, attempts[group]) for group, variants in sorted(groups.items())]


def render(table: list[Row]) -> str:
    lines = [
        "# Performance",
        "",
        "Measured by `python -m benchmarks.report` (pytest-benchmark, medians) on "
        f"{datetime.now(timezone.utc):%Y-%m-%d}, Python {platform.python_version()}, {platform.machine()}, "
        "on a shared 2-core machine: read the ratios, not the absolute times.",
        "",
        "- **vs hand-built**: instrumented call ÷ the same library call with the same spans (names, attributes, events,",
        "  status) and metric points built by hand with the OpenTelemetry API, same SDK set-up (SimpleSpanProcessor to an",
        "  exporter that drops spans). 1.00 means our instrumentation costs exactly what its telemetry costs.",
        "- **no SDK, added**: instrumented with no SDK configured − bare library call, per call.",
        "- **HTTP**: client CPU time against a server in another process. *per attempt vs contrib*: (ours − bare) ÷",
        "  attempts per call, against (contrib's requests instrumentation − bare) per request.",
        "",
        "| scenario | bare | hand-built | instrumented | vs hand-built (target) | no SDK, added (target) |",
        "|---|---|---|---|---|---|",
    ]
    for row in table:
        v = row.variants
        us = {k: f"{s * 1e6:.2f} µs" for k, s in v.items()}
        ratio = ""
        if "instrumented" in v and "hand_built" in v:
            r = v["instrumented"] / v["hand_built"]
            ratio = f"{r:.2f}× (≤ {row.ratio_target():.2f}) {'met' if r <= row.ratio_target() else 'MISSED'}"
        added = ""
        if "no_sdk" in v and "bare" in v:
            a = (v["no_sdk"] - v["bare"]) * 1e6
            verdict = "within noise" if a < 0 else ("met" if a <= NO_SDK_BUDGET_US else "MISSED")
            added = f"{a:+.2f} µs (≤ {NO_SDK_BUDGET_US}) {verdict}"
        lines.append(
            f"| {row.group} | {us.get('bare', '')} | {us.get('hand_built', '')} | {us.get('instrumented', '')} "
            f"| {ratio} | {added} |"
        )
    http = [row for row in table if "contrib" in row.variants and "instrumented" in row.variants]
    if http:
        lines += [
            "",
            "| HTTP scenario | attempts | contrib (one span per request) | ours + contrib | per attempt vs contrib (target) |",
            "|---|---|---|---|---|",
        ]
        for row in http:
            v = row.variants
            ours = (v["instrumented"] - v["bare"]) / row.attempts
            theirs = v["contrib"] - v["bare"]
            target = HTTP_ATTEMPT_VS_CONTRIB_TARGET
            both = f"{v['instrumented_with_contrib'] * 1e6:.1f} µs" if "instrumented_with_contrib" in v else ""
            if ours <= 0 or theirs <= 0:  # an instrumented run cheaper than the bare one: the noise is larger
                ratio = "not measurable in this run (noise larger than the difference)"
            else:
                r = ours / theirs
                ratio = f"{r:.2f}× (≤ {target}) {'met' if r <= target else 'MISSED'}"
            lines.append(f"| {row.group} | {row.attempts} | {v['contrib'] * 1e6:.1f} µs | {both} | {ratio} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        json_path = Path(tmp) / "bench.json"
        run(json_path, list(argv if argv is not None else sys.argv[1:]))
        report = render(rows(json_path))
    out = ROOT / "docs" / "performance.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
