"""Database API keys (``mcpk_...``) presented as bearer tokens; the owner's email is the identity,
the key's scopes its scopes."""

from __future__ import annotations

from mcp_auth.db.engine import Database
from mcp_auth.db.keys import PREFIX, ApiKeyStore
from mcp_auth.identity import Identity


class ApiKeyVerifier:
    """Looks every key up (no cache), so a revocation is effective on the next request."""

    def __init__(self, database: Database) -> None:
        self._keys = ApiKeyStore(database)

    async def verify(self, credential: str) -> Identity | None:
        if not credential.startswith(PREFIX):
            return None  # not an API key: another verifier (static bearer tokens) may know it
        info = await self._keys.authenticate(credential)
        return Identity(subject=info.email, method="api_key", email=info.email, scopes=info.scopes)
