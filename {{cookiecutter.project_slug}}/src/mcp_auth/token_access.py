"""Resolve the upstream token for a caller, auditing every hand-out.

The token for a call is service ``<service_name>``, key = the caller's identity when a token is
stored under it, else the shared key ``default`` (DESIGN.md section 3).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from mcp_auth.audit import AuditEvent, AuditSink
from mcp_auth.errors import DecryptionError, McpAuthError, ServiceUnavailable, TokenNotFound
from mcp_auth.identity import Identity
from mcp_auth.logs import register_secret
from mcp_auth.stores.base import DEFAULT_KEY, TokenStore

logger = logging.getLogger("mcp_auth.tokens")


@dataclass(frozen=True, slots=True)
class ResolvedToken:
    key: str
    value: str = field(repr=False)


@runtime_checkable
class AuditedReads(Protocol):
    """A store that writes the ``get_token`` audit row in the same round trip as the read
    (the database store: one connection checkout per hand-out instead of two)."""

    async def get_audited(
        self, service: str, key: str, user_email: str | None = None, *, audit_missing: bool = True
    ) -> str | None: ...


class TokenAccess:
    def __init__(self, store: TokenStore, audit: AuditSink, service: str, *, fused_audit: bool = False) -> None:
        """``fused_audit``: the store audits its own reads into the same log as ``audit``."""
        self.store = store
        self._audit = audit
        self.service = service
        self._fused = fused_audit and isinstance(store, AuditedReads)

    async def resolve(self, identity: Identity) -> ResolvedToken | None:
        """The caller's own token, else the shared one; ``None`` when neither is stored.

        Raises ServiceUnavailable when the store cannot answer (a DecryptionError becomes one
        too: the server cannot hand out the token until an operator fixes the key).
        """
        keys = [identity.subject] if identity.subject != DEFAULT_KEY else []
        keys.append(DEFAULT_KEY)
        for key in keys:
            try:
                if self._fused:
                    value = await self.store.get_audited(  # type: ignore[attr-defined]
                        self.service, key, identity.subject, audit_missing=False
                    )
                else:
                    value = await self.store.get(self.service, key)
            except (ServiceUnavailable, DecryptionError) as exc:
                if not (self._fused and isinstance(exc, DecryptionError)):  # fused: already audited
                    await self._record(identity, key, "failure", exc.message, best_effort=True)
                if isinstance(exc, DecryptionError):
                    raise ServiceUnavailable(exc.message) from None
                raise
            if value is not None:
                register_secret(value)
                if not self._fused:
                    await self._record(identity, key, "success", None, best_effort=False)
                return ResolvedToken(key, value)
        await self._record(
            identity,
            DEFAULT_KEY,
            "failure",
            str(TokenNotFound(self.service, DEFAULT_KEY)),
            best_effort=True,
        )
        return None

    async def _record(
        self, identity: Identity, key: str, result: str, detail: str | None, *, best_effort: bool
    ) -> None:
        event = AuditEvent(
            action="get_token",
            service_id=self.service,
            token_key=key,
            user_email=identity.subject,
            result="success" if result == "success" else "failure",
            detail=detail,
        )
        try:
            await self._audit.record(event)
        except McpAuthError as exc:
            # A token is never handed out unaudited; a failure is still reported to the caller.
            logger.error("audit write failed", extra={"reason": exc.message, "action": "get_token"})
            if not best_effort:
                raise ServiceUnavailable(f"audit log unavailable: {exc.message}") from None
