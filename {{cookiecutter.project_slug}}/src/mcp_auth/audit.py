"""Audit trail of token access and configuration changes (spec "MCP Audit Logging").

Rows never hold a token value, key or credential: only who, what, which key name and the result.

With a database, events go to the ``audit_log`` table as a hash chain: every row stores the hash
of the previous row and its own hash over (prev_hash, id, fields), so editing or deleting a row
breaks the chain at that row (``verify_chain``). Appends are serialized (PostgreSQL: a trigger
under an advisory lock; SQLite: BEGIN IMMEDIATE), so concurrent writers never fork the chain.
Limitation shared by every hash chain without an external anchor: dropping the newest rows
leaves a valid (shorter) chain.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from mcp_auth.db import Database

# SQLAlchemy is imported inside the database functions: deployments without a database
# (env / Infisical stores, LogAuditSink) never load it.

Action = Literal["get_token", "set_token", "delete_token", "rotate_key", "import_env"]
Result = Literal["success", "failure"]

logger = logging.getLogger("mcp_auth.audit")

GENESIS_HASH = "0" * 64
MAX_DETAIL = 500


@dataclass(frozen=True, slots=True)
class AuditEvent:
    action: Action
    service_id: str
    token_key: str | None
    user_email: str
    result: Result
    detail: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class AuditSink(Protocol):
    async def record(self, event: AuditEvent) -> None: ...


class LogAuditSink:
    """Audit events as JSON log lines, for deployments without a database (env, Infisical)."""

    async def record(self, event: AuditEvent) -> None:
        payload = asdict(event)
        payload["at"] = event.at.isoformat()
        logger.info("audit %s", json.dumps(payload, sort_keys=True), extra={"audit": payload})


class DatabaseAuditSink:
    """Audit events as rows of ``audit_log``; committed (visible) before ``record`` returns."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def record(self, event: AuditEvent) -> None:
        # On PostgreSQL this is a single INSERT (the trigger does the chaining), so it runs
        # without BEGIN/COMMIT round trips.
        await self.database.run(functools.partial(append, event=event), autocommit=True)


def build_audit_sink(database: Database | None) -> AuditSink:
    return LogAuditSink() if database is None else DatabaseAuditSink(database)


# ----- the chain ---------------------------------------------------------------------------


def _utc_text(at: datetime) -> str:
    # SQLite hands back naive datetimes; everything mcp_auth writes is UTC.
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.%f")


def chain_hash(
    prev_hash: str,
    row_id: int,
    at: datetime,
    service_id: str,
    action: str,
    token_key: str | None,
    user_email: str,
    result: str,
    detail: str | None,
) -> str:
    """The row hash; the PostgreSQL trigger in migration 0001 computes exactly the same."""
    fields: Iterable[str | None] = (
        prev_hash, str(row_id), _utc_text(at), service_id, action, token_key, user_email, result, detail,
    )
    canonical = ".".join("-" if value is None else value.encode("utf-8").hex() for value in fields)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _clip(detail: str | None) -> str | None:
    if detail is None:
        return None
    detail = " ".join(detail.split())
    return detail if len(detail) <= MAX_DETAIL else detail[: MAX_DETAIL - 1] + "…"


def append(conn: Connection, event: AuditEvent) -> None:
    """Insert ``event`` into ``audit_log`` inside the caller's transaction.

    Token writes call this in their own transaction, so the change and its audit row commit
    (or roll back) together.
    """
    from sqlalchemy import select

    from mcp_auth.models import audit_log

    at = event.at.astimezone(UTC)  # SQLite stores the wall-clock text, so it must be UTC
    detail = _clip(event.detail)
    values: dict[str, object] = {
        "at": at,
        "service_id": event.service_id,
        "action": event.action,
        "token_key": event.token_key,
        "user_email": event.user_email,
        "result": event.result,
        "detail": detail,
    }
    if conn.dialect.name == "postgresql":
        conn.execute(audit_log.insert(), values)  # the chain trigger fills id, prev_hash, hash
        return
    head = conn.execute(
        select(audit_log.c.id, audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1)
    ).first()
    row_id = head.id + 1 if head else 1
    prev_hash = head.hash if head else GENESIS_HASH
    digest = chain_hash(
        prev_hash, row_id, at, event.service_id, event.action, event.token_key, event.user_email,
        event.result, detail,
    )
    conn.execute(audit_log.insert(), {**values, "id": row_id, "prev_hash": prev_hash, "hash": digest})


class ChainCheck(NamedTuple):
    ok: bool
    first_broken_id: int | None


def _verify(conn: Connection) -> ChainCheck:
    from sqlalchemy import select

    from mcp_auth.models import audit_log

    expected_prev = GENESIS_HASH
    rows = conn.execution_options(yield_per=1000).execute(select(audit_log).order_by(audit_log.c.id))
    for row in rows:
        digest = chain_hash(
            row.prev_hash, row.id, row.at, row.service_id, row.action, row.token_key, row.user_email,
            row.result, row.detail,
        )
        if row.prev_hash != expected_prev or row.hash != digest:
            return ChainCheck(False, row.id)
        expected_prev = row.hash
    return ChainCheck(True, None)


async def verify_chain(database: Database) -> ChainCheck:
    """(True, None) when every row links to the one before and hashes to its stored hash."""
    return await database.run(_verify)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    service_id: str
    action: str
    token_key: str | None
    user_email: str
    result: str
    detail: str | None


async def list_events(database: Database, *, limit: int = 50, service: str | None = None) -> list[AuditRecord]:
    """The newest ``limit`` rows (optionally of one service), oldest first."""
    from sqlalchemy import select

    from mcp_auth.db import as_utc
    from mcp_auth.models import audit_log

    def work(conn: Connection) -> list[AuditRecord]:
        columns = [audit_log.c[column.name] for column in fields(AuditRecord)]
        query = select(*columns).order_by(audit_log.c.id.desc()).limit(limit)
        if service is not None:
            query = query.where(audit_log.c.service_id == service)
        rows = reversed(conn.execute(query).all())
        return [AuditRecord(row[0], as_utc(row[1]), *row[2:]) for row in rows]

    return await database.run(work, autocommit=True)
