"""Static bearer tokens from MCP_BEARER_TOKENS (``name=token``); the name is the identity."""

from __future__ import annotations

import hashlib
import hmac

from mcp_auth.identity import Identity


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class StaticBearerVerifier:
    """Constant-time check against every configured token.

    Comparing fixed-length SHA-256 digests with ``hmac.compare_digest`` over *all* entries keeps
    the time independent of which token (or how much of one) matched.
    """

    def __init__(self, tokens: dict[str, str]) -> None:
        self._entries = [(_digest(token), name) for token, name in tokens.items()]

    def __bool__(self) -> bool:
        return bool(self._entries)

    async def verify(self, credential: str) -> Identity | None:
        presented = _digest(credential)
        found: str | None = None
        for digest, name in self._entries:
            if hmac.compare_digest(presented, digest):
                found = name
        return Identity(subject=found, method="bearer") if found else None
