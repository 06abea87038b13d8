"""Finding the user's callable among a target's arguments, and handing the target a stand-in for it.

Retry and breaker targets both receive the app's callable as an argument (the operation to attempt, the function to
guard); we pass a proxy of it in its place for the duration of that one call, so what the helper does with it can be
observed without touching the helper.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_logger = logging.getLogger("otel_resilience")

_SINGLE = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


@dataclass(frozen=True)
class Found:
    """The callable one call received, and where: at `position` in the positional arguments, or as `keyword`."""

    value: Any
    position: int | None
    keyword: str | None

    def replace(self, args: tuple[Any, ...], kwargs: dict[str, Any], new: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The same arguments with `new` in the callable's place (copies; the caller's objects are not changed)."""
        if self.keyword is not None:
            return args, {**kwargs, self.keyword: new}
        assert self.position is not None
        return (*args[: self.position], new, *args[self.position + 1 :]), kwargs


class ArgumentLocator:
    """Finds the user's callable in one call's arguments (those after any ``self``/``cls``): the parameter `name`
    (by keyword, or at `position` when it can be passed positionally), else the first callable argument. A class is
    never it (a helper may pass a class to ``issubclass`` or apply it to a result: ``request(cast_to, fn)``)."""

    __slots__ = ("name", "position")

    def __init__(self, name: str | None = None, position: int | None = None) -> None:
        self.name = name
        self.position = position

    @classmethod
    def for_parameters(cls, parameters: Sequence[inspect.Parameter], name: str) -> ArgumentLocator:
        """The locator of parameter `name` among `parameters`; a `ValueError` saying why when there is none."""
        for index, parameter in enumerate(parameters):
            if parameter.name != name:
                continue
            if parameter.kind is inspect.Parameter.VAR_POSITIONAL:
                raise ValueError(f"{name!r} is *{name}: name a single parameter")
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                raise ValueError(f"{name!r} is **{name}: name a single parameter")
            return cls(name, index if parameter.kind in _SINGLE else None)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            return cls(name)  # it can only arrive by keyword, through **kwargs
        listed = ", ".join(p.name for p in parameters) or "none"
        raise ValueError(f"it has no parameter {name!r} (its parameters: {listed})")

    def find(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Found | None:
        """Where the callable is in this call, or None when the call has none there."""
        if self.name is None:
            for index, value in enumerate(args):
                if attemptable(value):
                    return Found(value, index, None)
            for keyword, value in kwargs.items():
                if attemptable(value):
                    return Found(value, None, keyword)
            return None
        if self.name in kwargs:
            value = kwargs[self.name]
            return Found(value, None, self.name) if attemptable(value) else None
        if self.position is not None and self.position < len(args) and attemptable(args[self.position]):
            return Found(args[self.position], self.position, None)
        return None


def attemptable(value: Any) -> bool:
    """Whether `value` can be the user's callable: callable, and not a class."""
    return callable(value) and not isinstance(value, type)
