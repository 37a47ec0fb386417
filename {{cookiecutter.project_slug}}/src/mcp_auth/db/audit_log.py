"""The ``audit_log`` table: a hash chain of audit events, appended and verified.

Appends are serialized (PostgreSQL: a trigger under an advisory lock computes id, prev_hash and
hash; SQLite: BEGIN IMMEDIATE and ``chain_hash`` here), so concurrent writers never fork the chain.
"""

from __future__ import annotations

import asyncio
import functools
import weakref
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, NamedTuple

from mcp_auth.audit import GENESIS_HASH, AuditEvent, chain_hash, clip_detail
from mcp_auth.db.engine import Database, as_utc
from mcp_auth.db.models import audit_log
from mcp_auth.errors import ServiceUnavailable
from sqlalchemy import Insert, select
from sqlalchemy.engine import Connection


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


def append(conn: Connection, event: AuditEvent) -> None:
    """Insert ``event`` into ``audit_log`` inside the caller's transaction.

    Token writes call this in their own transaction, so the change and its audit row commit
    (or roll back) together.
    """
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
        "detail": clip_detail(event.detail),
    }


@functools.cache
def _pg_insert() -> Insert:
    # Built once: constructing a statement per call costs about as much as the round trip.
    # inline(): no RETURNING, nothing needs the id the trigger assigns.
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

    def work(conn: Connection) -> list[AuditRecord]:
        columns = [audit_log.c[column.name] for column in fields(AuditRecord)]
        query = select(*columns).order_by(audit_log.c.id.desc()).limit(limit)
        if service is not None:
            query = query.where(audit_log.c.service_id == service)
        rows = reversed(conn.execute(query).all())
        return [AuditRecord(row[0], as_utc(row[1]), *row[2:]) for row in rows]

    return await database.run(work, autocommit=True, retry=True)
