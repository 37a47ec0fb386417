"""Static bearer tokens from MCP_BEARER_TOKENS (``name=token`` or ``name[scope scope]=token``);
the name is the identity."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from mcp_auth.identity import Identity


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class StaticBearerVerifier:
    """Constant-time check against every configured token.

    Comparing fixed-length SHA-256 digests with ``hmac.compare_digest`` over *all* entries keeps
    the time independent of which token (or how much of one) matched.
    """

    def __init__(self, tokens: dict[str, str], scopes: Mapping[str, frozenset[str]] | None = None) -> None:
        """``tokens``: {token: name}; ``scopes``: {name: scopes} of the tokens that carry scopes."""
        self._entries = [(_digest(token), name) for token, name in tokens.items()]
        self._scopes = dict(scopes or {})

    def __bool__(self) -> bool:
        return bool(self._entries)

    async def verify(self, credential: str) -> Identity | None:
        presented = _digest(credential)
        found: str | None = None
        for digest, name in self._entries:
            if hmac.compare_digest(presented, digest):
                found = name
        if found is None:
            return None
        return Identity(subject=found, method="bearer", scopes=self._scopes.get(found, frozenset()))
