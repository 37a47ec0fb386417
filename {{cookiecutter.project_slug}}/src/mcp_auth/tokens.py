"""Upstream tokens: the one service every read, write and rotation goes through.

Every hand-out is audited. The middleware (``resolve``: the caller's own token, else the shared
``default``) and the package-level functions (``get``) share it. A store that writes its own
audit rows into the same log (``AuditedReads``: the database store) gets the one-round-trip
path; any other store is read, then audited through the sink. The actor of a read made while
serving a request is the authenticated caller; outside a request it is the operator.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from mcp_auth.audit import AuditEvent, AuditSink, LogAuditSink, Result
from mcp_auth.context import current_identity
from mcp_auth.errors import DecryptionError, McpAuthError, ReadOnlyStore, ServiceUnavailable, TokenNotFound
from mcp_auth.identity import Identity
from mcp_auth.logs import register_secret
from mcp_auth.observability import tracing
from mcp_auth.observability.metrics import timed
from mcp_auth.stores.base import DEFAULT_KEY, AuditedReads, BulkWritableStore, RotatableStore, TokenStore

logger = logging.getLogger("mcp_auth.tokens")


@dataclass(frozen=True, slots=True)
class ResolvedToken:
    key: str
    value: str = field(repr=False)


class TokenService:
    def __init__(self, store: TokenStore, audit: AuditSink, *, service: str, operator: str) -> None:
        """``service``: the upstream service a request's token is resolved for; ``operator``:
        the audit actor of reads made outside a request."""
        self._store = store
        self._audit = audit
        self.service = service
        self.operator = operator
        # Decided once: store and sink are fixed for the service's lifetime.
        self._fused: AuditedReads | None = (
            store if isinstance(store, AuditedReads) and store.writes_audit_to(audit) else None
        )

    @property
    def store(self) -> TokenStore:
        return self._store

    @property
    def audit(self) -> AuditSink:
        return self._audit

    @property
    def reads_in_one_trip(self) -> bool:
        """True when the store writes each read's audit row itself, in the same round trip."""
        return self._fused is not None

    # ----- reads ---------------------------------------------------------------------------

    async def resolve(self, identity: Identity, tool: str | None = None) -> ResolvedToken | None:
        """The caller's own token, else the shared one; ``None`` when neither is stored.
        ``tool``: the tool whose call needs it (recorded in the audit rows).

        Raises ServiceUnavailable when the store cannot answer (a DecryptionError becomes one
        too: the server cannot hand out the token until an operator fixes the key).
        """
        attributes = {
            tracing.ENDUSER_ID: identity.subject,
            tracing.TOOL_NAME: tool,
            "mcp_auth.service": self.service,
            "mcp_auth.token_store": self._store.name,
        }
        with tracing.span("mcp_auth.resolve_token", attributes) as span:
            resolved = await self._resolve(identity, tool)
            # Which key answered: the caller's own ("own") or the shared one; never the value.
            found = "none" if resolved is None else "default" if resolved.key == DEFAULT_KEY else "own"
            span.set_attribute("mcp_auth.token.key", found)
            return resolved

    async def _resolve(self, identity: Identity, tool: str | None) -> ResolvedToken | None:
        keys = [identity.subject] if identity.subject != DEFAULT_KEY else []
        keys.append(DEFAULT_KEY)
        try:
            if self._fused is not None:
                # Both keys in one audited read: one statement on PostgreSQL, however many keys.
                with self._timed("get", audited=True):
                    found = await self._fused.get_first_audited(self.service, keys, identity.subject, tool=tool)
            else:
                found = await self._first_then_audit(keys, identity.subject, tool)
        except DecryptionError as exc:
            raise ServiceUnavailable(exc.message) from None
        if found is None:
            return None
        key, value = found
        register_secret(value)
        return ResolvedToken(key, value)

    async def _first_then_audit(self, keys: list[str], actor: str, tool: str | None) -> tuple[str, str] | None:
        """``get_first_audited`` for a store that does not audit its reads: read key by key, audit
        each hand-out through the sink, and one failure row for the last key when none is stored."""
        for key in keys:
            value = await self._read_then_audit(self.service, key, actor, audit_missing=False, tool=tool)
            if value is not None:
                return key, value
        missing = str(TokenNotFound(self.service, keys[-1]))
        await self._record(self.service, keys[-1], actor, "failure", missing, tool=tool)
        return None

    async def get(self, service: str, key: str) -> str | None:
        """The plaintext token or None; every call leaves a ``get_token`` audit entry."""
        return await self._read(service, key, self.actor(), audit_missing=True)

    def actor(self) -> str:
        identity = current_identity()
        return self.operator if identity is None else identity.subject

    async def _read(
        self, service: str, key: str, actor: str, *, audit_missing: bool, tool: str | None = None
    ) -> str | None:
        if self._fused is not None:
            with self._timed("get", audited=True):
                value = await self._fused.get_audited(service, key, actor, audit_missing=audit_missing, tool=tool)
        else:
            value = await self._read_then_audit(service, key, actor, audit_missing=audit_missing, tool=tool)
        if value is not None:
            register_secret(value)
        return value

    async def _read_then_audit(
        self, service: str, key: str, actor: str, *, audit_missing: bool, tool: str | None
    ) -> str | None:
        try:
            with self._timed("get", audited=False):
                value = await self._store.get(service, key)
        except McpAuthError as exc:
            with contextlib.suppress(McpAuthError):  # the store's error is the one to report
                await self._record(service, key, actor, "failure", exc.message, tool=tool)
            raise
        if value is not None:
            # A token is never handed out unaudited: a failed audit write is a 503.
            await self._record(service, key, actor, "success", None, tool=tool, required=True)
        elif audit_missing:
            await self._record(service, key, actor, "failure", "not found", tool=tool)
        return value

    async def _record(
        self,
        service: str,
        key: str,
        actor: str,
        result: Result,
        detail: str | None,
        *,
        tool: str | None = None,
        required: bool = False,
    ) -> None:
        event = AuditEvent("get_token", service, key, actor, result, detail, tool=tool)
        sink = "log" if isinstance(self._audit, LogAuditSink) else "database"
        attributes = {
            "mcp_auth.audit.action": event.action,
            "mcp_auth.audit.result": result,
            "mcp_auth.audit.sink": sink,
            tracing.ENDUSER_ID: actor,
            tracing.TOOL_NAME: tool,
        }
        try:
            with tracing.span("mcp_auth.audit.write", attributes):
                if sink == "log":  # the database sink times its own inserts (mcp_auth.db.audit_log)
                    with timed("audit_write", "log"):
                        await self._audit.record(event)
                else:
                    await self._audit.record(event)
        except McpAuthError as exc:
            logger.error("audit write failed", extra={"reason": exc.message, "action": "get_token"})
            if required:
                raise ServiceUnavailable(f"audit log unavailable: {exc.message}") from None

    # ----- writes (the store audits them in the same transaction) ----------------------------

    async def set(self, service: str, key: str, value: str) -> None:
        """Store (encrypt) a token; ReadOnlyStore on the env and Infisical stores."""
        with self._timed("set"):
            await self.store.set(service, key, value)

    async def delete(self, service: str, key: str) -> bool:
        """True when a token was deleted, False when none was stored."""
        with self._timed("delete"):
            return await self.store.delete(service, key)

    async def rotate_key(self, old_key: str, new_key: str) -> int:
        """Re-encrypt every token from ``old_key`` to ``new_key`` (base64 keys); all or nothing."""
        if not isinstance(self.store, RotatableStore):
            raise ReadOnlyStore(
                f"rotate_key needs MCP_TOKEN_STORE=postgres (the {self.store.name} store is not encrypted)"
            )
        return await self.store.rotate_key(old_key, new_key)

    async def check(self) -> None:
        with self._timed("check"):
            await self.store.check()

    @contextlib.contextmanager
    def _timed(self, operation: str, *, audited: bool | None = None) -> Iterator[None]:
        """``mcp_token_store_duration_seconds`` and the ``mcp_auth.token_store.<operation>`` span."""
        attributes = {"mcp_auth.token_store": self._store.name, "mcp_auth.token_store.audited": audited}
        with tracing.span(f"mcp_auth.token_store.{operation}", attributes):
            with timed("token_store", self._store.name, operation):
                yield

    async def close(self) -> None:
        await self.store.close()

    async def import_many(self, rows: Iterable[tuple[str, str, str]]) -> int:
        """Store many (service, key, value) tokens in one transaction, all or nothing, one
        ``set_token`` audit row each; returns how many. A ValueError (InvalidTokenRow) names the
        first bad row: a name ``set`` refuses, an empty value, a (service, key) given twice.
        ReadOnlyStore on the env and Infisical stores."""
        if not isinstance(self.store, BulkWritableStore):
            raise ReadOnlyStore(
                f"importing tokens needs MCP_TOKEN_STORE=postgres (the {self.store.name} store is read-only)"
            )
        with self._timed("import"):
            return await self.store.import_many(rows)
