"""The package's declared library ranges cannot drift from what each instrumentor states."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from otel_resilience.instrumentation import INSTRUMENTORS

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())


def test_instruments_any_is_every_instrumentors_range() -> None:
    declared = {str(Requirement(r)) for r in PYPROJECT["project"]["optional-dependencies"]["instruments-any"]}
    stated = set()
    for target in INSTRUMENTORS.values():
        module, _, cls = target.partition(":")
        instrumentor = getattr(importlib.import_module(module), cls)
        stated |= {str(Requirement(r)) for r in instrumentor().instrumentation_dependencies()}
    assert declared == stated


def test_entry_points_are_the_instrumentors() -> None:
    entry_points = PYPROJECT["project"]["entry-points"]["opentelemetry_instrumentor"]
    assert entry_points == INSTRUMENTORS
