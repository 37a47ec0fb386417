"""The one interface every credential verifier implements (Starlette's backend shape)."""

from __future__ import annotations

from typing import Protocol

from mcp_auth.identity import Identity


class Verifier(Protocol):
    """Turns one presented credential into an Identity.

    Returns ``None`` when the credential is not one this verifier knows (the next verifier may);
    raises ``AuthenticationFailed`` when it is recognisably this kind and invalid, and
    ``ServiceUnavailable`` when the verifier cannot decide (JWKS or database down).
    """

    async def verify(self, credential: str) -> Identity | None: ...
