"""``python -m otel_resilience`` (or ``otel-resilience``): the first thing to run when a span is missing.

For every supported library it prints the installed version, the range otel_resilience supports, whether that
version is within it, and whether our instrumentation really patched it in this process; then whether an SDK is
configured, whether its span ids leave the app's global `random` alone, what
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` switches off, and each configured target, found or not (read from its
module's source: nothing of the app is imported). Run it the way the app runs to see the app's view:
``opentelemetry-instrument python -m otel_resilience`` shows what the launcher switches on.

`diagnose()` returns the same facts as data, for an app that wants to log them at start-up.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, requires, version
from typing import Any, TextIO

from opentelemetry import trace
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from otel_resilience._environment import disabled_instrumentations, is_disabled
from otel_resilience._setup.providers import global_meter_provider
from otel_resilience.core.config import SETTINGS
from otel_resilience.instrumentation import INSTRUMENTORS
from otel_resilience.targets import TargetStatus, diagnose_targets
from otel_resilience.version import __version__

_DISTRIBUTION = "otel-resilience"
_PREFIX = "resilience_"


@dataclass(frozen=True)
class LibraryStatus:
    """One supported library as this process sees it."""

    library: str
    entry_point: str
    distribution: str
    supported: str
    installed: str | None
    in_range: bool | None
    """None when the library is not installed."""
    instrumented: bool
    """Our instrumentor is on and patched the library (the launcher switches every entry point on, also for a library
    that is missing or out of range: that instrumentor patched nothing)."""
    disabled: bool
    """Named in ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS``."""


def _declared_ranges() -> dict[str, Requirement]:
    """The ``instruments-any`` requirements of our distribution's metadata, by canonical distribution name: the
    ranges the launcher checks, available even for a library whose instrumentation package this build lacks."""
    ranges: dict[str, Requirement] = {}
    try:
        declared = requires(_DISTRIBUTION) or []
    except PackageNotFoundError:
        return ranges
    for text in declared:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if requirement.marker is not None and requirement.marker.evaluate({"extra": "instruments-any"}):
            ranges[canonicalize_name(requirement.name)] = requirement
    return ranges


def _package_range(library: str, distribution: str) -> Requirement | None:
    """The instrumentor's own range (its ``package.py`` `_instruments`), which imports nothing of the library."""
    try:
        package = importlib.import_module(f"otel_resilience.instrumentation.{library}.package")
    except ImportError:
        return None
    for text in getattr(package, "_instruments", ()):
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == distribution:
            return requirement
    return None


def _is_instrumented(entry_point: str, in_range: bool | None) -> bool:
    """Whether our instrumentor for `entry_point` patched its library in this process: it is switched on, the library
    is installed within its range (what the instrumentor checks before patching anything), and it holds the telemetry
    its patches record through. Its module is looked up, never imported: one that was never imported cannot be on,
    and importing it would import the library."""
    module_name, _, attribute = INSTRUMENTORS[entry_point].partition(":")
    module = sys.modules.get(module_name)
    cls = getattr(module, attribute, None) if module is not None else None
    instance = getattr(cls, "_instance", None) if cls is not None else None
    switched_on = bool(getattr(instance, "_is_instrumented_by_opentelemetry", False))
    return switched_on and in_range is True and getattr(instance, "telemetry", None) is not None


def diagnose() -> list[LibraryStatus]:
    """The status of every supported library, in the order of `INSTRUMENTORS`."""
    declared = _declared_ranges()
    disabled = disabled_instrumentations()
    statuses = []
    for entry_point in INSTRUMENTORS:
        library = entry_point.removeprefix(_PREFIX)
        distribution = canonicalize_name(library)
        requirement = _package_range(library, distribution) or declared.get(distribution)
        try:
            installed: str | None = version(distribution)
        except PackageNotFoundError:
            installed = None
        in_range = None
        if installed is not None and requirement is not None:
            in_range = requirement.specifier.contains(installed, prereleases=True)
        statuses.append(
            LibraryStatus(
                library=library,
                entry_point=entry_point,
                distribution=distribution,
                supported=str(requirement.specifier) if requirement is not None else "unknown",
                installed=installed,
                in_range=in_range,
                instrumented=_is_instrumented(entry_point, in_range),
                disabled=is_disabled(entry_point, disabled),
            )
        )
    return statuses


def _qualified(value: object) -> str:
    return type(value).__module__ + "." + type(value).__qualname__


def _id_generator(tracer_provider: object) -> str:
    """Where the provider's span ids come from: ``global random`` is the SDK's default generator, which consumes the
    app's seeded `random` sequence (tracing then changes what such an app does)."""
    generator = getattr(tracer_provider, "id_generator", None)
    if generator is None:
        return "-"
    try:
        from otel_resilience._setup.ids import draws_from_global_random
    except ImportError:
        return _qualified(generator)
    return "global random (the SDK's default)" if draws_from_global_random(tracer_provider) else _qualified(generator)


def _provider_description() -> dict[str, str]:
    tracer_provider = trace.get_tracer_provider()
    meter_provider = global_meter_provider()
    return {
        "tracer_provider": "none configured"
        if isinstance(tracer_provider, trace.ProxyTracerProvider)
        else _qualified(tracer_provider),
        "id_generator": _id_generator(tracer_provider),
        "meter_provider": "none configured" if meter_provider is None else _qualified(meter_provider),
    }


def _otel_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in (
        "opentelemetry-api",
        "opentelemetry-sdk",
        "opentelemetry-instrumentation",
        "opentelemetry-distro",
        "opentelemetry-exporter-otlp-proto-grpc",
        "opentelemetry-exporter-otlp-proto-http",
    ):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _yes_no(value: bool | None, *, unknown: str = "-") -> str:
    return unknown if value is None else ("yes" if value else "no")


def render(statuses: Sequence[LibraryStatus], out: TextIO) -> None:
    """The human-readable report."""
    providers = _provider_description()
    versions = _otel_versions()
    out.write(f"otel-resilience {__version__} (Python {platform.python_version()})\n\n")
    header = ("library", "installed", "supported", "in range", "instrumented")
    rows = [
        (
            s.library,
            s.installed or "not installed",
            s.supported,
            _yes_no(s.in_range),
            "disabled" if s.disabled else _yes_no(s.instrumented),
        )
        for s in statuses
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip() + "\n")
    out.write("\n")
    out.write(f"tracer provider: {providers['tracer_provider']}\n")
    if providers["id_generator"] != "-":
        out.write(f"span ids:        {providers['id_generator']}\n")
    out.write(f"meter provider:  {providers['meter_provider']}\n")
    out.write(f"settings:        attempt_spans={SETTINGS.attempt_spans} stacktraces={SETTINGS.stacktraces}\n")
    out.write("opentelemetry:   " + ", ".join(f"{k.removeprefix('opentelemetry-')} {v or 'missing'}"
                                              for k, v in versions.items()) + "\n")
    notes = []
    if not versions["opentelemetry-sdk"] or not versions["opentelemetry-distro"]:
        notes.append("the SDK, OTLP exporters or distro are missing: pip install 'otel-resilience[otlp]'")
    if providers["id_generator"].startswith("global random"):
        from otel_resilience._setup.ids import ADVICE

        notes.append(
            "span ids come from the global random module, so tracing changes what an app that seeds random does: "
            + ADVICE
        )
    if any(s.in_range is False for s in statuses):
        notes.append("a library outside its supported range is not instrumented")
    if not any(s.instrumented for s in statuses):
        notes.append(
            "nothing is instrumented in this process: run your app under `opentelemetry-instrument` or call "
            "otel_resilience.setup() (run this command the same way to see the app's view)"
        )
    for note in notes:
        out.write(f"note: {note}\n")


def render_targets(targets: Sequence[TargetStatus], out: TextIO) -> None:
    """The configured targets, and whether each was found."""
    if not targets:
        return
    out.write("\ntargets (found: yes, no, or - until the script runs):\n")
    for status in targets:
        found = _yes_no(status.found)
        out.write(f"  {status.kind:<7}  {status.target}  ({status.source})  found: {found}  {status.detail}\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="otel-resilience",
        description="Show which retry and circuit-breaker libraries otel_resilience supports, which are installed, "
        "in a supported version, and instrumented in this process.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    statuses = diagnose()
    try:
        _write(args.json, statuses)
    except BrokenPipeError:
        # The reader left (`otel-resilience --json | head`): stop quietly, as Unix tools do. Python would report the
        # error again when it flushes stdout at exit, so stdout now points at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    return 0


def _write(as_json: bool, statuses: list[LibraryStatus]) -> None:
    if as_json:
        report: dict[str, Any] = {
            "version": __version__,
            "libraries": [asdict(s) for s in statuses],
            "targets": [asdict(t) for t in diagnose_targets()],
            **_provider_description(),
            "settings": {"attempt_spans": SETTINGS.attempt_spans, "stacktraces": SETTINGS.stacktraces},
            "opentelemetry": _otel_versions(),
        }
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render(statuses, sys.stdout)
        render_targets(diagnose_targets(), sys.stdout)
    sys.stdout.flush()  # a closed pipe shows up here, inside main, not in the interpreter's flush at exit


if __name__ == "__main__":
    sys.exit(main())
