"""The ``audit_log`` table: a hash chain of audit events, appended, verified and checkpointed.

Appends are serialized, so concurrent writers never fork the chain: on PostgreSQL an advisory lock
(the chain trigger, or ``mcp_auth_audit_head()`` for keyed writers), on SQLite BEGIN IMMEDIATE.
Unkeyed rows on PostgreSQL are linked by the trigger; keyed rows (MCP_AUDIT_KEY) and every SQLite
row are linked here with ``chain_hash``, the key never leaving this process.
"""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

from mcp_auth.audit import (
    GENESIS_HASH,
    KEYED_LOG_MESSAGE,
    SCHEME_HMAC,
    SCHEME_SHA256,
    SCHEME_SHA256_TOOL,
    AuditEvent,
    chain_hash,
    clip_detail,
)
from mcp_auth.db.engine import Database, as_utc
from mcp_auth.db.group_commit import GroupCommit, each_its_own
from mcp_auth.db.models import audit_log
from mcp_auth.errors import ConfigError, ServiceUnavailable
from mcp_auth.observability.metrics import timed
from mcp_auth.observability.tracing import ENDUSER_ID, span
from sqlalchemy import Insert, select, text
from sqlalchemy.engine import Connection


class DatabaseAuditSink:
    """Audit events as rows of ``audit_log``, committed (visible) before ``record`` returns.

    The chain serializes appends, so committing events one by one would cap throughput at one
    WAL flush per event. Concurrent ``record`` calls are therefore group-committed: while one
    batch commits, new events queue up and share the next batch's transaction. Every caller
    still waits for its own row to be committed (no token is handed out unaudited).
    """

    def __init__(self, database: Database, audit_key: bytes | None = None) -> None:
        self.database = database
        self.audit_key = audit_key
        self._batches: GroupCommit[AuditEvent, None] = GroupCommit(self._append)

    async def head(self) -> Checkpoint | None:
        """The chain head as a checkpoint (the server logs it periodically)."""
        return await chain_head(self.database)

    async def record(self, event: AuditEvent) -> None:
        await self._batches.submit(event)

    async def _append(self, events: list[AuditEvent]) -> list[BaseException | None]:
        try:
            # A single unkeyed event is a single INSERT: on PostgreSQL it runs without BEGIN/COMMIT.
            work = functools.partial(append_all, events=events, key=self.audit_key)
            await self.database.run(work, autocommit=len(events) == 1 and self.audit_key is None)
        except Exception as exc:
            return list(each_its_own(exc, len(events)))
        return [None] * len(events)


def append(conn: Connection, event: AuditEvent, key: bytes | None = None) -> None:
    """Insert ``event`` into ``audit_log`` inside the caller's transaction, keyed with ``key``
    (MCP_AUDIT_KEY) when given.

    Token writes call this in their own transaction, so the change and its audit row commit
    (or roll back) together.
    """
    append_all(conn, [event], key)


def append_all(conn: Connection, events: list[AuditEvent], key: bytes | None = None) -> None:
    """Insert several events in the caller's transaction, in order (timed: the audit write
    latency metric, and the ``mcp_auth.audit.insert`` span)."""
    attributes = {
        "mcp_auth.audit.rows": len(events),
        "mcp_auth.audit.keyed": key is not None,
        "mcp_auth.audit.action": events[0].action if events else None,
        ENDUSER_ID: events[0].user_email if len(events) == 1 else None,
    }
    with span("mcp_auth.audit.insert", attributes), timed("audit_write", "database"):
        _insert_events(conn, events, key)


def _insert_events(conn: Connection, events: list[AuditEvent], key: bytes | None) -> None:
    if conn.dialect.name == "postgresql" and key is None:
        # The chain trigger fills id, prev_hash and hash (several rows: one pipelined executemany).
        conn.execute(_pg_insert(), [_values(event) for event in events])
        return
    head = _locked_head(conn)
    conn.execute(audit_log.insert(), chained_rows(head, events, key))


def chained_rows(head: tuple[int, str, int], events: list[AuditEvent], key: bytes | None) -> list[dict[str, Any]]:
    """The rows of ``events`` linked after ``head`` ((id, hash, scheme) of the newest row, read
    with the chain locked): HMAC-SHA256 with ``key``, else the unkeyed hash, which a keyed chain
    refuses (ServiceUnavailable)."""
    head_id, head_hash, head_scheme = head
    if key is None and head_scheme == SCHEME_HMAC:
        raise ServiceUnavailable(KEYED_LOG_MESSAGE)
    scheme = SCHEME_SHA256_TOOL if key is None else SCHEME_HMAC
    rows = []
    for event in events:
        values = _values(event)
        head_id += 1
        digest = chain_hash(
            head_hash,
            head_id,
            values["at"],
            event.service_id,
            event.action,
            event.token_key,
            event.user_email,
            event.result,
            values["detail"],
            tool=event.tool,
            scheme=scheme,
            key=key,
        )
        rows.append({**values, "id": head_id, "prev_hash": head_hash, "hash": digest, "hash_scheme": scheme})
        head_hash = digest
    return rows


HEAD_SQL = "SELECT id, hash, hash_scheme FROM mcp_auth_audit_head()"
"""PostgreSQL: lock the chain until the transaction ends, and read its head (migration 0002)."""


def head_of(row: Any) -> tuple[int, str, int]:
    return (0, GENESIS_HASH, 0) if row is None else (int(row[0]), str(row[1]), int(row[2]))


def _locked_head(conn: Connection) -> tuple[int, str, int]:
    """(id, hash, scheme) of the newest row, with the chain locked until the transaction ends."""
    if conn.dialect.name == "postgresql":
        head = conn.execute(text(HEAD_SQL)).first()
    else:  # SQLite: BEGIN IMMEDIATE already holds the write lock
        columns = (audit_log.c.id, audit_log.c.hash, audit_log.c.hash_scheme)
        head = conn.execute(select(*columns).order_by(audit_log.c.id.desc()).limit(1)).first()
    return head_of(head)


def _values(event: AuditEvent) -> dict[str, Any]:
    return {
        "at": event.at.astimezone(UTC),  # SQLite stores the wall-clock text, so it must be UTC
        "service_id": event.service_id,
        "action": event.action,
        "token_key": event.token_key,
        "user_email": event.user_email,
        "result": event.result,
        "detail": clip_detail(event.detail),
        "tool": event.tool,
    }


@functools.cache
def _pg_insert() -> Insert:
    # Built once: constructing a statement per call costs about as much as the round trip.
    # inline(): no RETURNING, nothing needs the id the trigger assigns.
    return audit_log.insert().inline()


class Checkpoint(NamedTuple):
    """A chain head worth remembering elsewhere: ``ID:HASH`` (``audit checkpoint`` prints it)."""

    id: int
    hash: str

    def __str__(self) -> str:
        return f"{self.id}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        row_id, sep, digest = text.strip().partition(":")
        if not sep or not row_id.isdigit() or len(digest) != 64 or set(digest) - set("0123456789abcdef"):
            raise ValueError("a checkpoint is ID:HASH, e.g. 1234:9f86d08... (64 hex characters)")
        return cls(int(row_id), digest)


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """The outcome of ``verify_chain``: what was checked, and the first problem found."""

    ok: bool
    first_broken_id: int | None = None
    problem: str | None = None
    rows: int = 0
    first_id: int | None = None
    head: Checkpoint | None = None
    keyed_from: int | None = None  # the first row hashed with MCP_AUDIT_KEY


@dataclass
class _Walk:
    """State of one pass over the chain, oldest row first."""

    key: bytes | None
    rows: int = 0
    first_id: int | None = None
    head: Checkpoint | None = None
    scheme: int = SCHEME_SHA256
    keyed_from: int | None = None

    def problem(self, row: Any) -> str | None:
        if row.hash_scheme not in (SCHEME_SHA256, SCHEME_SHA256_TOOL, SCHEME_HMAC):
            return f"its hash scheme {row.hash_scheme} is unknown"
        if row.hash_scheme == SCHEME_SHA256 and row.tool is not None:
            return "it is hashed without its tool column, which was filled in later"
        if row.prev_hash != (self.head.hash if self.head else GENESIS_HASH):
            return "it does not link to the row before it (a row was deleted, inserted or changed)"
        if row.hash_scheme < self.scheme:
            return "it is hashed with an older scheme than the row before it (the chain was downgraded)"
        if row.hash_scheme == SCHEME_HMAC and self.key is None:
            raise ConfigError(
                f"audit rows from id {row.id} on are keyed: set MCP_AUDIT_KEY (the server's key) to verify them"
            )
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
            tool=row.tool,
            scheme=row.hash_scheme,
            key=self.key,
        )
        return None if hmac.compare_digest(digest, row.hash) else "its hash does not match its contents"

    def step(self, row: Any) -> None:
        self.rows += 1
        self.first_id = row.id if self.first_id is None else self.first_id
        self.head = Checkpoint(row.id, row.hash)
        self.scheme = row.hash_scheme
        if row.hash_scheme == SCHEME_HMAC and self.keyed_from is None:
            self.keyed_from = row.id

    def result(self, broken: Any = None, problem: str | None = None) -> ChainCheck:
        return ChainCheck(
            ok=broken is None,
            first_broken_id=None if broken is None else broken.id,
            problem=problem,
            rows=self.rows,
            first_id=self.first_id,
            head=self.head,
            keyed_from=self.keyed_from,
        )


def _verify(conn: Connection, key: bytes | None, expect: Checkpoint | None) -> ChainCheck:
    walk = _Walk(key)
    rows = conn.execution_options(yield_per=1000).execute(select(audit_log).order_by(audit_log.c.id))
    for row in rows:
        problem = walk.problem(row)
        if problem is not None:
            return walk.result(row, problem)
        walk.step(row)
    if expect is not None:
        problem = _checkpoint_problem(conn, expect, walk.head)
        if problem is not None:
            return replace(walk.result(), ok=False, first_broken_id=expect.id, problem=problem)
    return walk.result()


def _checkpoint_problem(conn: Connection, expect: Checkpoint, head: Checkpoint | None) -> str | None:
    found = conn.execute(select(audit_log.c.hash).where(audit_log.c.id == expect.id)).first()
    if found is None:
        end = f"it now ends at row {head.id}" if head else "it is empty"
        return f"row {expect.id} of checkpoint {expect} is missing: the log was cut ({end})"
    if found[0] != expect.hash:
        return f"row {expect.id} no longer has the hash of checkpoint {expect}: the chain was rewritten"
    return None


async def verify_chain(database: Database, *, key: bytes | None = None, expect: Checkpoint | None = None) -> ChainCheck:
    """Recompute every link. ``key`` (MCP_AUDIT_KEY) is needed once keyed rows exist (ConfigError
    without it); ``expect``, a checkpoint taken earlier, must still be in the chain unchanged."""
    return await database.run(functools.partial(_verify, key=key, expect=expect), retry=True)


async def chain_head(database: Database) -> Checkpoint | None:
    """The newest row as a checkpoint (None while the log is empty)."""

    def work(conn: Connection) -> Checkpoint | None:
        row = conn.execute(select(audit_log.c.id, audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1)).first()
        return None if row is None else Checkpoint(int(row[0]), str(row[1]))

    return await database.run(work, autocommit=True, retry=True)


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
    tool: str | None = None


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
