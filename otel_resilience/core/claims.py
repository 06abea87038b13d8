"""Claims: one retry operation, when a library runs its retries on another library's retry loop.

stamina runs every retry on a tenacity loop. Both are instrumented, and each instrumentor would record that loop: two
operation spans, two spans per attempt, and a retry counted one level too deep. Instead the library on top claims the
operation its loop is about to start:

    token = claim_operation(OperationClaim(owner=stamina_adapter, name="app.fetch_user", span_name="fetch_user"))
    try:
        ...  # stamina starts tenacity's loop here
    finally:
        release_claim(token)

The adapter of the loop library asks `current_claim()` when an operation starts. An adapter created for the claimant
(its ``claimant`` is the claim's ``owner``) takes the claim, once, and records the operation under the claimant's
scope and names; every other adapter of that loop stays out while a claim is set. The claim covers only the call that
starts the loop: the attempts' bodies run outside it, so a retry nested in an attempt is an operation of its own.
"""

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
