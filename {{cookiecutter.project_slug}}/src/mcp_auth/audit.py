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

import asyncio
import functools
import hashlib
import json
import logging
import weakref
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol, get_args

from mcp_auth.errors import ServiceUnavailable

if TYPE_CHECKING:
    from mcp_auth.db import Database
    from sqlalchemy import Insert
    from sqlalchemy.engine import Connection

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
    """Audit events as rows of ``audit_log``, committed (visible) before ``record`` returns.

    The chain serializes appends, so committing events one by one would cap throughput at one
    WAL flush per event. Concurrent ``record`` calls are therefore group-committed: while one
    batch commits, new events queue up and share the next batch's transaction. Every caller
    still waits for its own row to be committed (no token is handed out unaudited).
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self._batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _GroupCommit] = weakref.WeakKeyDictionary()

    async def record(self, event: AuditEvent) -> None:
        _validate(event)
        loop = asyncio.get_running_loop()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = _GroupCommit(self.database)
        await batch.submit(event)


class _GroupCommit:
    """The event queue of one event loop and the task that drains it."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._pending: list[tuple[AuditEvent, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, event: AuditEvent) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append((event, future))
        if self._flusher is None or self._flusher.done():
            # A task of its own: a caller that is cancelled must not abort the others' batch.
            self._flusher = loop.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            events = [event for event, _ in batch]
            error: Exception | None = None
            try:
                # A single event is a single INSERT: on PostgreSQL it runs without BEGIN/COMMIT.
                await self._database.run(functools.partial(append_all, events=events), autocommit=len(events) == 1)
            except Exception as exc:
                error = exc
            for _, future in batch:
                if future.done():  # its caller was cancelled
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(
                        ServiceUnavailable(error.message) if isinstance(error, ServiceUnavailable) else error
                    )


def _validate(event: AuditEvent) -> None:
    # Checked before queueing: one malformed event must not fail its whole batch.
    if event.action not in get_args(Action) or event.result not in get_args(Result):
        raise ValueError(f"not an audit action/result: {event.action!r}/{event.result!r}")


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
        prev_hash,
        str(row_id),
        _utc_text(at),
        service_id,
        action,
        token_key,
        user_email,
        result,
        detail,
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
    from mcp_auth.models import audit_log
    from sqlalchemy import select

    values = _values(event)
    if conn.dialect.name == "postgresql":
        conn.execute(_pg_insert(), values)  # the chain trigger fills id, prev_hash, hash
        return
    head = conn.execute(select(audit_log.c.id, audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1)).first()
    row_id = head.id + 1 if head else 1
    prev_hash = head.hash if head else GENESIS_HASH
    digest = chain_hash(
        prev_hash,
        row_id,
        values["at"],
        event.service_id,
        event.action,
        event.token_key,
        event.user_email,
        event.result,
        values["detail"],
    )
    conn.execute(audit_log.insert(), {**values, "id": row_id, "prev_hash": prev_hash, "hash": digest})


def _values(event: AuditEvent) -> dict[str, Any]:
    return {
        "at": event.at.astimezone(UTC),  # SQLite stores the wall-clock text, so it must be UTC
        "service_id": event.service_id,
        "action": event.action,
        "token_key": event.token_key,
        "user_email": event.user_email,
        "result": event.result,
        "detail": _clip(event.detail),
    }


@functools.cache
def _pg_insert() -> Insert:
    # Built once: constructing a statement per call costs about as much as the round trip.
    # inline(): no RETURNING, nothing needs the id the trigger assigns.
    from mcp_auth.models import audit_log

    return audit_log.insert().inline()


def append_all(conn: Connection, events: list[AuditEvent]) -> None:
    """Insert several events in the caller's transaction, in order."""
    if conn.dialect.name == "postgresql" and len(events) > 1:
        # One executemany (pipelined by psycopg); the trigger chains the rows in order.
        conn.execute(_pg_insert(), [_values(event) for event in events])
        return
    for event in events:
        append(conn, event)


class ChainCheck(NamedTuple):
    ok: bool
    first_broken_id: int | None


def _verify(conn: Connection) -> ChainCheck:
    from mcp_auth.models import audit_log
    from sqlalchemy import select

    expected_prev = GENESIS_HASH
    rows = conn.execution_options(yield_per=1000).execute(select(audit_log).order_by(audit_log.c.id))
    for row in rows:
        digest = chain_hash(
            row.prev_hash,
            row.id,
            row.at,
            row.service_id,
            row.action,
            row.token_key,
            row.user_email,
            row.result,
            row.detail,
        )
        if row.prev_hash != expected_prev or row.hash != digest:
            return ChainCheck(False, row.id)
        expected_prev = row.hash
    return ChainCheck(True, None)


async def verify_chain(database: Database) -> ChainCheck:
    """(True, None) when every row links to the one before and hashes to its stored hash."""
    return await database.run(_verify, retry=True)


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
    from mcp_auth.db import as_utc
    from mcp_auth.models import audit_log
    from sqlalchemy import select

    def work(conn: Connection) -> list[AuditRecord]:
        columns = [audit_log.c[column.name] for column in fields(AuditRecord)]
        query = select(*columns).order_by(audit_log.c.id.desc()).limit(limit)
        if service is not None:
            query = query.where(audit_log.c.service_id == service)
        rows = reversed(conn.execute(query).all())
        return [AuditRecord(row[0], as_utc(row[1]), *row[2:]) for row in rows]

    return await database.run(work, autocommit=True, retry=True)
