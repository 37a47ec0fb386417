"""Token storage as configured: the database (only with DATABASE_URL), the store named by
MCP_TOKEN_STORE, the audit sink, and the TokenService over them. The server's Runtime and the
package-level token functions both open it here, so they are built the same way.

``mcp_auth.db`` (SQLAlchemy, psycopg, Alembic) is imported only when DATABASE_URL is set: an
env- or Infisical-store server without a database never loads them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcp_auth.audit import AuditSink, LogAuditSink
from mcp_auth.config import McpAuthSettings
from mcp_auth.errors import ServiceUnavailable
from mcp_auth.stores import build_store
from mcp_auth.tokens import TokenService

if TYPE_CHECKING:  # annotations only: importing it at run time would load SQLAlchemy
    from mcp_auth.db import Database

logger = logging.getLogger("mcp_auth.backend")


@dataclass
class Backend:
    tokens: TokenService
    database: Database | None
    audit_head: Callable[[], Awaitable[object | None]] | None = None
    """The audit chain's head as a checkpoint (``ID:HASH`` when printed); None without a database."""

    async def close(self) -> None:
        await self.tokens.close()
        if self.database is not None:
            self.database.close()


def open_backend(settings: McpAuthSettings, *, require_schema: bool = False) -> Backend:
    """Build everything token storage needs; ConfigError naming the variable when it cannot work.

    ``require_schema``: check the migrations are applied (the server's start-up check). An
    unreachable database is then logged, not raised: it is an outage (503 until it comes back).
    """
    database = _open_database(settings, require_schema) if settings.uses_database else None
    try:
        store = build_store(settings, database)
    except BaseException:
        if database is not None:
            database.close()
        raise
    audit, audit_head = _audit_sink(database, settings.audit_key_bytes())
    tokens = TokenService(store, audit, service=settings.service_name, operator=settings.operator)
    return Backend(tokens, database, audit_head)


def _open_database(settings: McpAuthSettings, require_schema: bool) -> Database:
    from mcp_auth import db
    from mcp_auth.db import migrations

    database = db.open_database(settings)
    if require_schema:
        try:
            migrations.require_schema(database)
        except ServiceUnavailable as exc:
            logger.warning("database unreachable at start-up", extra={"reason": exc.message})
        except BaseException:
            database.close()
            raise
    return database


def _audit_sink(
    database: Database | None, audit_key: bytes | None
) -> tuple[AuditSink, Callable[[], Awaitable[object | None]] | None]:
    if database is None:
        return LogAuditSink(), None
    from mcp_auth.db.audit_log import DatabaseAuditSink

    sink = DatabaseAuditSink(database, audit_key)
    return sink, sink.head
