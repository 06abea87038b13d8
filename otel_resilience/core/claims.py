"""Claims: stamina runs every retry on a tenacity loop, and both may be instrumented; so that the loop is one operation
(not two, one level too deep), the library on top claims the operation its loop is about to start, and only the
claimant's adapter of the loop library records it (`claim_operation` ... `release_claim` around the loop's start; the
loop's adapter asks `current_claim()`). The attempts' bodies run outside the claim: a nested retry is its own."""

from __future__ import annotations

import contextvars
from typing import Final


class OperationClaim:
    """The operation that the loop started next belongs to `owner`, named `name` (``module.qualname``) and
    `span_name` (the bare qualname)."""

    __slots__ = ("owner", "name", "span_name", "taken")

    def __init__(self, owner: object, name: str, span_name: str) -> None:
        self.owner = owner
        self.name = name
        self.span_name = span_name
        self.taken = False

    def take(self, claimant: object | None) -> bool:
        """True once, for the claimant's adapter; then, and for everybody else, False."""
        if self.taken or claimant is None or claimant is not self.owner:
            return False
        self.taken = True
        return True


_CLAIM: Final[contextvars.ContextVar[OperationClaim | None]] = contextvars.ContextVar(
    "otel_resilience_operation_claim", default=None
)


def claim_operation(claim: OperationClaim) -> contextvars.Token[OperationClaim | None]:
    return _CLAIM.set(claim)


def release_claim(token: contextvars.Token[OperationClaim | None]) -> None:
    _CLAIM.reset(token)


current_claim: Final = _CLAIM.get
"""The claim set around the current call, if any."""
