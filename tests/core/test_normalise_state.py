"""`normalise_state`: every common spelling of a breaker state maps to the contract's three names."""

from __future__ import annotations

import enum
from typing import Any

import pytest

from otel_resilience import semconv
from otel_resilience.core import normalise_state


class Numbered(enum.Enum):
    CLOSED = 1
    OPEN = 2
    HALF_OPEN = 3


class Valued(enum.Enum):
    A = "closed"
    B = "half-open"
    C = "something else"


class Mixed(str, enum.Enum):
    HalfOpen = "ho"


class StateObject:
    """Like pybreaker's state objects: the state is the object's `name`."""

    def __init__(self, name: str) -> None:
        self.name = name


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("closed", semconv.STATE_CLOSED),
        ("Closed", semconv.STATE_CLOSED),
        ("CLOSED", semconv.STATE_CLOSED),
        ("OPEN", semconv.STATE_OPEN),
        ("open", semconv.STATE_OPEN),
        ("opened", semconv.STATE_OPEN),
        ("HALF_OPEN", semconv.STATE_HALF_OPEN),
        ("half-open", semconv.STATE_HALF_OPEN),
        ("HalfOpen", semconv.STATE_HALF_OPEN),
        ("half_open", semconv.STATE_HALF_OPEN),
        ("half open", semconv.STATE_HALF_OPEN),
        ("half-opened", semconv.STATE_HALF_OPEN),
        (Numbered.CLOSED, semconv.STATE_CLOSED),
        (Numbered.OPEN, semconv.STATE_OPEN),
        (Numbered.HALF_OPEN, semconv.STATE_HALF_OPEN),
        (Valued.A, semconv.STATE_CLOSED),
        (Valued.B, semconv.STATE_HALF_OPEN),
        (Mixed.HalfOpen, semconv.STATE_HALF_OPEN),
        (StateObject("half-open"), semconv.STATE_HALF_OPEN),
    ],
)
def test_spellings_map_to_the_contract(value: Any, expected: str) -> None:
    result = normalise_state(value)
    assert result == expected
    assert type(result) is str


@pytest.mark.parametrize("value", ["", "bogus", "halfway", Valued.C, 3, None, True, StateObject("tripped"), object()])
def test_unrecognisable_values_are_none(value: Any) -> None:
    assert normalise_state(value) is None
