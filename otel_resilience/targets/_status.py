"""What ``python -m otel_resilience`` says about configured targets: each one, and whether it was found.

In the process that configured them, a target's own registration knows (patched where, given up why, or still
waiting). Elsewhere, the module's source is read, never imported (importing a script would run the program): a
target is found when its module is on the import path and defines the qualified name with ``class``/``def``.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from typing import Any

from otel_resilience.targets._definitions import MAIN
from otel_resilience.targets.spec import Kind, TargetSpec, find_module_spec, parse_target, split_targets


@dataclass(frozen=True)
class TargetStatus:
    """One configured target as this process sees it."""

    kind: str
    target: str
    source: str
    """The environment variable that names it, or ``setup`` for a target configured in code in this process."""
    found: bool | None
    """None: cannot be known before the program runs (a target in ``__main__``)."""
    detail: str


def _defined_in(tree: ast.Module, qualname: str) -> int | None:
    """The line where `qualname` is defined by ``class``/``def`` statements at module level (also inside
    ``if``/``try``) and in class bodies, or None."""
    statements: list[Any] = tree.body
    line: int | None = None
    for part in qualname.split("."):
        line = None
        pending = list(statements)
        while pending:
            node = pending.pop(0)
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.name == part:
                    line, statements = node.lineno, node.body
                    break
            else:
                for block in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, block, None)
                    if isinstance(inner, list):
                        pending.extend(inner)
        if line is None:
            return None
    return line


def static_status(spec: TargetSpec) -> tuple[bool | None, str]:
    """Whether `spec` is defined, from its module's source, importing nothing."""
    if spec.module == MAIN:
        return None, "in the program's script: checked when it runs"
    module_spec = find_module_spec(spec.module)
    if module_spec is None:
        return False, f"module {spec.module} not found on the import path (run this from where the app runs)"
    origin = module_spec.origin
    if not origin or not origin.endswith(".py") or not os.path.exists(origin):
        return True, f"module {spec.module} found (no source to look into)"
    try:
        with open(origin, encoding="utf-8") as file:
            tree = ast.parse(file.read(), origin)
    except (OSError, SyntaxError, ValueError) as exc:
        return False, f"{origin} cannot be read: {exc}"
    line = _defined_in(tree, spec.qualname)
    if line is None:
        return False, f"{origin} defines no {spec.qualname}"
    return True, f"defined at {origin}:{line}"


def target_statuses(configured: dict[str, tuple[Kind, str]], live: dict[str, tuple[TargetSpec, bool | None, str]]) -> list[TargetStatus]:
    """`configured`: environment variable → (kind, its value); `live`: this process's registrations by key →
    (spec, found, detail)."""
    statuses: list[TargetStatus] = []
    seen: set[str] = set()
    for variable, (kind, value) in configured.items():
        for text in split_targets(value):
            try:
                spec = parse_target(kind, text)
            except ValueError as exc:
                statuses.append(TargetStatus(kind, text, variable, False, str(exc)))
                continue
            seen.add(spec.key)
            if spec.key in live:
                _, found, detail = live[spec.key]
            else:
                found, detail = static_status(spec)
            statuses.append(TargetStatus(kind, spec.text, variable, found, detail))
    for key, (spec, found, detail) in live.items():
        if key not in seen:
            statuses.append(TargetStatus(spec.kind, spec.text, "setup", found, detail))
    return statuses


__all__ = ["TargetStatus", "static_status", "target_statuses"]
