"""Audit log: sinks, the hash chain (PostgreSQL trigger == Python), tamper detection, concurrency."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from mcp_auth.audit import GENESIS_HASH, SCHEME_SHA256_TOOL, AuditEvent, LogAuditSink, chain_hash
from mcp_auth.backend import open_backend
from mcp_auth.db import Database
from mcp_auth.db import audit_log as audit_module
from mcp_auth.db.audit_log import DatabaseAuditSink, list_events, verify_chain
from mcp_auth.db.models import audit_log
from mcp_auth.testing.settings import make_settings
from sqlalchemy import Executable, Row, delete, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError


def event(i: int = 0, **overrides: object) -> AuditEvent:
    fields: dict[str, object] = {
        "action": "get_token",
        "service_id": "demo",
        "token_key": f"user{i}@example.com",
        "user_email": f"user{i}@example.com",
        "result": "success",
    }
    fields.update(overrides)
    return AuditEvent(**fields)  # type: ignore[arg-type]


def all_rows(database: Database) -> list[Row[Any]]:
    with database.engine.connect() as conn:
        return list(conn.execute(select(audit_log).order_by(audit_log.c.id)))


def tamper(database: Database, statement: Executable) -> None:
    """Bypass the append-only guard the way an attacker with table access would."""
    with database.engine.begin() as conn:
        if database.is_postgres:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
            conn.execute(statement)
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
            conn.execute(statement)


async def test_log_sink_writes_json_lines(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="mcp_auth.audit"):
        await LogAuditSink().record(event(1, result="failure", detail="not found"))
    (record,) = caplog.records
    assert record.getMessage() == "audit"
    payload = record.audit  # type: ignore[attr-defined]
    assert payload["action"] == "get_token" and payload["result"] == "failure" and payload["detail"] == "not found"
    assert json.loads(json.dumps(payload)) == payload  # a JSON line's field as it is


async def test_backend_audits_to_the_log_without_a_database_else_to_the_table(sqlite_url: str) -> None:
    without = open_backend(make_settings(MCP_TOKEN_STORE="env"))
    try:
        assert isinstance(without.tokens.audit, LogAuditSink) and without.database is None
    finally:
        await without.close()
    backend = open_backend(make_settings(MCP_TOKEN_STORE="env", DATABASE_URL=sqlite_url))
    try:
        sink = backend.tokens.audit
        assert isinstance(sink, DatabaseAuditSink) and sink.database is backend.database
    finally:
        await backend.close()


async def test_record_is_committed_before_it_returns(database: Database) -> None:
    sink = DatabaseAuditSink(database)
    started = time.perf_counter()
    await sink.record(event(1, at=datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))))
    elapsed = time.perf_counter() - started
    other = Database.from_url(database.engine.url.render_as_string(hide_password=False))
    try:
        (row,) = all_rows(other)  # a separate connection sees it: committed, not buffered
    finally:
        other.close()
    assert (row.id, row.action, row.service_id, row.token_key, row.result) == (
        1,
        "get_token",
        "demo",
        "user1@example.com",
        "success",
    )
    assert row.prev_hash == GENESIS_HASH and len(row.hash) == 64
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)
    assert at == datetime(2030, 1, 2, 1, 4, 5, 678901, tzinfo=UTC)
    assert elapsed < 1.0  # generous on a loaded CI box; benchmarks/bench_vault.py measures it


async def test_chain_links_every_row_and_matches_the_python_hash(database: Database) -> None:
    sink = DatabaseAuditSink(database)
    await sink.record(event(0, token_key=None, detail=None))
    await sink.record(event(1, result="failure", detail="naïve ünïcode · detail\nwith  whitespace"))
    for i in range(2, 6):
        await sink.record(event(i, action="set_token"))
    rows = all_rows(database)
    assert [r.id for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[1].detail == "naïve ünïcode · detail with whitespace"
    previous = GENESIS_HASH
    for row in rows:  # on PostgreSQL the trigger computed these; recompute them in Python
        assert row.prev_hash == previous
        assert row.hash == chain_hash(
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
        )
        previous = row.hash
    assert {row.hash_scheme for row in rows} == {SCHEME_SHA256_TOOL}, "unkeyed rows since migration 0002"
    assert (await verify_chain(database)).ok


async def test_detail_is_clipped(database: Database) -> None:
    await DatabaseAuditSink(database).record(event(detail="x" * 5000))
    (row,) = all_rows(database)
    assert len(row.detail) == 500 and row.detail.endswith("…")


async def test_audit_log_is_append_only(database: Database) -> None:
    await DatabaseAuditSink(database).record(event())
    with pytest.raises(DBAPIError, match="append-only"), database.engine.begin() as conn:
        conn.execute(update(audit_log).values(result="failure"))
    with pytest.raises(DBAPIError, match="append-only"), database.engine.begin() as conn:
        conn.execute(delete(audit_log))


@pytest.mark.parametrize("how", ["edit a field", "edit and re-hash", "delete a row"])
async def test_tampering_is_detected_at_the_first_broken_row(database: Database, how: str) -> None:
    sink = DatabaseAuditSink(database)
    for i in range(6):
        await sink.record(event(i))
    if how == "edit a field":
        tamper(database, update(audit_log).where(audit_log.c.id == 3).values(user_email="someone-else"))
        expected = 3
    elif how == "edit and re-hash":
        row = all_rows(database)[2]
        forged = chain_hash(
            row.prev_hash, 3, row.at, "demo", "get_token", row.token_key, "x", "success", None, scheme=2
        )
        tamper(database, update(audit_log).where(audit_log.c.id == 3).values(user_email="x", hash=forged))
        expected = 4  # row 3 is self-consistent now, but row 4 still points at its old hash
    else:
        tamper(database, delete(audit_log).where(audit_log.c.id == 4))
        expected = 5
    check = await verify_chain(database)
    assert (check.ok, check.first_broken_id) == (False, expected)


async def test_concurrent_writers_never_fork_the_chain(postgres_database: Database) -> None:
    # Eight replicas (separate engines, so separate connections) appending at once.
    url = postgres_database.engine.url.render_as_string(hide_password=False)
    replicas = [Database.from_url(url) for _ in range(8)]
    try:
        sinks = [DatabaseAuditSink(db) for db in replicas]

        async def burst(n: int, sink: DatabaseAuditSink) -> None:
            for i in range(15):
                await sink.record(event(n * 100 + i))

        await asyncio.gather(*(burst(n, sink) for n, sink in enumerate(sinks)))
    finally:
        for db in replicas:
            db.close()
    rows = all_rows(postgres_database)
    assert [r.id for r in rows] == list(range(1, 121))
    assert len({r.prev_hash for r in rows}) == 120  # no two rows claim the same predecessor
    assert (await verify_chain(postgres_database)).ok


async def test_list_events_newest_rows_oldest_first(database: Database) -> None:
    sink = DatabaseAuditSink(database)
    for i in range(5):
        await sink.record(event(i, service_id="demo" if i % 2 else "other"))
    listed = await list_events(database, limit=2)
    assert [r.id for r in listed] == [4, 5]
    assert [r.id for r in await list_events(database, service="demo")] == [2, 4]
    assert listed[0].at.tzinfo is not None


async def test_concurrent_records_are_group_committed(
    postgres_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    original = audit_module.append_all

    def spy(conn: Connection, events: list[AuditEvent], key: bytes | None = None) -> None:
        batches.append(len(events))
        original(conn, events, key)

    monkeypatch.setattr(audit_module, "append_all", spy)
    sink = DatabaseAuditSink(postgres_database)
    await asyncio.gather(*(sink.record(event(i)) for i in range(50)))
    assert sum(batches) == 50 and len(batches) < 50  # fewer transactions (WAL flushes) than events
    rows = all_rows(postgres_database)
    assert sorted(r.token_key for r in rows) == sorted(f"user{i}@example.com" for i in range(50))
    assert (await verify_chain(postgres_database)).ok


async def test_a_cancelled_caller_does_not_lose_the_others(postgres_database: Database) -> None:
    sink = DatabaseAuditSink(postgres_database)
    first = asyncio.create_task(sink.record(event(1)))
    others = [asyncio.create_task(sink.record(event(i))) for i in range(2, 6)]
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(*others)
    assert len(all_rows(postgres_database)) >= 4


async def test_malformed_events_are_refused_before_queueing(sqlite_database: Database) -> None:
    with pytest.raises(ValueError, match="not an audit action"):
        await DatabaseAuditSink(sqlite_database).record(event(action="read_token"))
