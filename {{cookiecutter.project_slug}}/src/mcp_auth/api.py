"""The spec's token API as package-level functions: ``await mcp_auth.get_token(service, key)``.

They act on the store configured from the environment (MCP_TOKEN_STORE, DATABASE_URL,
MCP_AUTH_ENCRYPTION_KEY, ...), built on first use, and audit as MCP_OPERATOR_EMAIL. A project
names itself once with ``configure(PROJECT)`` (the generated package does this) so the env store
knows its variable; code that prefers no globals builds a store and calls the same methods.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass

from mcp_auth.audit import AuditEvent, AuditSink, DatabaseAuditSink, build_audit_sink
from mcp_auth.config import ProjectInfo, load_settings
from mcp_auth.db import Database
from mcp_auth.errors import McpAuthError, ReadOnlyStore
from mcp_auth.stores.base import TokenStore
from mcp_auth.stores.database import DatabaseTokenStore

__all__ = ["close", "configure", "delete_token", "get_token", "rotate_key", "set_token"]

_GENERIC_PROJECT = ProjectInfo(
    slug="mcp-server",
    service_name="service",
    service_token_env="SERVICE_API_TOKEN",
)


@dataclass
class _Configured:
    store: TokenStore
    audit: AuditSink
    actor: str
    database: Database | None = None  # closed by close() when we opened it


_lock = threading.Lock()
_project: ProjectInfo | None = None
_configured: _Configured | None = None


def configure(
    project: ProjectInfo | None = None,
    *,
    store: TokenStore | None = None,
    audit: AuditSink | None = None,
    actor: str | None = None,
) -> None:
    """Name the project (settings are then read from the environment on first use), or hand
    over an explicitly built store. Replaces any store built before (without closing it)."""
    global _project, _configured
    with _lock:
        if project is not None:
            _project = project
        if store is None:
            _configured = None
            return
        database = store.database if isinstance(store, DatabaseTokenStore) else None
        sink = audit or build_audit_sink(database)
        who = actor or (store.actor if isinstance(store, DatabaseTokenStore) else None)
        if who is None:
            who = load_settings(_project or _GENERIC_PROJECT).operator
        _configured = _Configured(store, sink, who)


def _current() -> _Configured:
    global _configured
    with _lock:
        if _configured is None:
            from mcp_auth.stores import build_store

            settings = load_settings(_project or _GENERIC_PROJECT)
            database = Database.from_settings(settings) if settings.uses_database else None
            try:
                store = build_store(settings, database)
            except BaseException:
                if database is not None:
                    database.close()
                raise
            _configured = _Configured(store, build_audit_sink(database), settings.operator, database)
        return _configured


async def set_token(service: str, key: str, value: str) -> None:
    """Store (encrypt) a token; ReadOnlyStore on the env and Infisical stores."""
    await _current().store.set(service, key, value)


async def get_token(service: str, key: str) -> str | None:
    """The plaintext token or None; every call leaves a ``get_token`` audit entry."""
    configured = _current()
    store = configured.store
    audit = configured.audit
    if (
        isinstance(store, DatabaseTokenStore)
        and isinstance(audit, DatabaseAuditSink)
        and audit.database is store.database
    ):
        # Same database: the read and its audit row in one round trip to a worker thread.
        return await store.get_audited(service, key, configured.actor)
    event = functools.partial(AuditEvent, "get_token", service, key, configured.actor)
    try:
        value = await store.get(service, key)
    except McpAuthError as exc:
        with contextlib.suppress(McpAuthError):  # the store's error is the one to report
            await audit.record(event("failure", exc.message))
        raise
    await audit.record(event("success") if value is not None else event("failure", "not found"))
    return value


async def delete_token(service: str, key: str) -> bool:
    """True when a token was deleted, False when none was stored."""
    return await _current().store.delete(service, key)


async def rotate_key(old_key: str, new_key: str) -> int:
    """Re-encrypt every token from ``old_key`` to ``new_key`` (base64 keys); all or nothing.

    Returns the number of tokens re-encrypted. Only the database store holds encrypted tokens.
    """
    store = _current().store
    if not isinstance(store, DatabaseTokenStore):
        raise ReadOnlyStore(f"rotate_key needs MCP_TOKEN_STORE=postgres (the {store.name} store is not encrypted)")
    return await store.rotate_key(old_key, new_key)


async def close() -> None:
    """Close the store built from the environment (tests, scripts that exit cleanly)."""
    global _configured
    with _lock:
        configured, _configured = _configured, None
    if configured is not None:
        await configured.store.close()
        if configured.database is not None:
            configured.database.close()
