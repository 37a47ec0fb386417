"""The audit chain against the database owner: keyed hashes (MCP_AUDIT_KEY), no downgrade, no
TRUNCATE, checkpoints that detect a cut tail, and rows from before migration 0002 still verify.

The attacker here holds the owner's database credentials (they can disable triggers and rewrite
any row, and they have this very code), but not MCP_AUDIT_KEY, which lives outside the database.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastmcp import FastMCP
from mcp_auth.asgi import app as app_module
from mcp_auth.asgi.app import build_http_app
from mcp_auth.audit import (
    KEYED_LOG_MESSAGE,
    SCHEME_HMAC,
    SCHEME_SHA256,
    SCHEME_SHA256_TOOL,
    AuditEvent,
    chain_hash,
)
from mcp_auth.cli import build_cli
from mcp_auth.crypto import generate_key, parse_key
from mcp_auth.db import Database, migrations
from mcp_auth.db.audit_log import Checkpoint, DatabaseAuditSink, chain_head, verify_chain
from mcp_auth.db.models import audit_log
from mcp_auth.errors import ConfigError, ServiceUnavailable
from mcp_auth.runtime import Runtime
from mcp_auth.testing.clients import running
from mcp_auth.testing.settings import DEMO, DEMO_BEARER, make_settings
from mcp_auth.tool_policies import NEEDS_UPSTREAM_TOKEN
from sqlalchemy import select, text, update
from sqlalchemy.engine import Connection
from typer.testing import CliRunner

KEY_TEXT = generate_key()
KEY = parse_key(KEY_TEXT, name="test key")


def event(i: int, **overrides: object) -> AuditEvent:
    fields: dict[str, object] = {
        "action": "get_token",
        "service_id": "demo",
        "token_key": "default",
        "user_email": f"user{i}@example.com",
        "result": "success",
        "tool": "upstream_get",
    }
    fields.update(overrides)
    return AuditEvent(**fields)  # type: ignore[arg-type]


async def fill(database: Database, count: int, key: bytes | None) -> None:
    sink = DatabaseAuditSink(database, key)
    for i in range(count):
        await sink.record(event(i))


def as_owner(database: Database, *statements: str) -> None:
    """What the owner can do to the table: switch every trigger off, act, switch them back on."""
    with database.engine.begin() as conn:
        if database.is_postgres:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_delete"))
        for statement in statements:
            conn.execute(text(statement))
        if database.is_postgres:
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))


def rehash_from(conn: Connection, first: int, *, scheme: int, key: bytes | None) -> None:
    """Recompute every link from row ``first`` on with the shipped chain_hash (an attacker's tool)."""
    rows = list(conn.execute(select(audit_log).order_by(audit_log.c.id)))
    previous = rows[first - 2].hash if first > 1 else "0" * 64
    for row in rows[first - 1 :]:
        digest = chain_hash(
            previous,
            row.id,
            row.at,
            row.service_id,
            row.action,
            row.token_key,
            row.user_email,
            row.result,
            row.detail,
            tool=row.tool,
            scheme=scheme,
            key=key,
        )
        conn.execute(
            update(audit_log)
            .where(audit_log.c.id == row.id)
            .values(prev_hash=previous, hash=digest, hash_scheme=scheme)
        )
        previous = digest


def forge(database: Database, *, scheme: int, key: bytes | None) -> None:
    """Rewrite row 3 and re-chain everything after it, triggers off: the full owner attack."""
    with database.engine.begin() as conn:
        if database.is_postgres:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
        conn.execute(update(audit_log).where(audit_log.c.id == 3).values(user_email="mallory@example.com"))
        rehash_from(conn, 3, scheme=scheme, key=key)
        if database.is_postgres:
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))


async def test_keyed_rows_verify_only_with_the_key(database: Database) -> None:
    await fill(database, 5, KEY)
    with database.engine.connect() as conn:
        schemes = [row.hash_scheme for row in conn.execute(select(audit_log).order_by(audit_log.c.id))]
    assert schemes == [SCHEME_HMAC] * 5
    check = await verify_chain(database, key=KEY)
    assert check.ok and (check.rows, check.first_id, check.keyed_from) == (5, 1, 1)
    assert check.head == await chain_head(database)
    with pytest.raises(ConfigError, match="set MCP_AUDIT_KEY"):
        await verify_chain(database)
    wrong = await verify_chain(database, key=parse_key(generate_key(), name="other"))
    assert (wrong.ok, wrong.first_broken_id) == (False, 1)


@pytest.mark.parametrize(
    ("scheme", "key"),
    [(SCHEME_SHA256_TOOL, None), (SCHEME_SHA256, None), (SCHEME_HMAC, b"\x00" * 32), (SCHEME_HMAC, b"guess" * 7)],
    ids=["unkeyed", "legacy", "zero-key", "guessed-key"],
)
async def test_the_owner_cannot_rewrite_keyed_rows_without_the_key(
    database: Database, scheme: int, key: bytes | None
) -> None:
    await fill(database, 6, KEY)
    forge(database, scheme=scheme, key=key)
    check = await verify_chain(database, key=KEY)
    assert (check.ok, check.first_broken_id) == (False, 3), check.problem


async def test_a_fully_downgraded_chain_is_caught_by_a_checkpoint(database: Database) -> None:
    """Rewriting every row as unkeyed makes a self-consistent chain; the checkpoint held outside
    the database (the server logs one) no longer matches it."""
    await fill(database, 4, KEY)
    checkpoint = await chain_head(database)
    assert checkpoint is not None
    with database.engine.begin() as conn:
        if database.is_postgres:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER IF EXISTS audit_log_no_update"))
        rehash_from(conn, 1, scheme=SCHEME_SHA256_TOOL, key=None)
    assert (await verify_chain(database, key=KEY)).ok, "consistent on its own ..."
    check = await verify_chain(database, key=KEY, expect=checkpoint)
    assert not check.ok and "the chain was rewritten" in (check.problem or "")


async def test_a_cut_tail_is_caught_by_a_checkpoint(database: Database) -> None:
    await fill(database, 6, KEY)
    checkpoint = await chain_head(database)
    assert checkpoint == Checkpoint(6, checkpoint.hash if checkpoint else "")
    as_owner(database, "DELETE FROM audit_log WHERE id > 4")
    assert (await verify_chain(database, key=KEY)).ok, "a shorter chain is still a chain ..."
    check = await verify_chain(database, key=KEY, expect=checkpoint)
    assert (check.ok, check.first_broken_id) == (False, 6)
    assert check.problem == f"row 6 of checkpoint {checkpoint} is missing: the log was cut (it now ends at row 4)"


async def test_truncate_is_refused_and_a_truncated_log_fails_the_checkpoint(postgres_database: Database) -> None:
    await fill(postgres_database, 3, KEY)
    checkpoint = await chain_head(postgres_database)
    assert checkpoint is not None
    with pytest.raises(Exception, match="append-only"), postgres_database.engine.begin() as conn:
        conn.execute(text("TRUNCATE audit_log"))
    as_owner(postgres_database, "TRUNCATE audit_log")
    check = await verify_chain(postgres_database, key=KEY, expect=checkpoint)
    assert not check.ok and check.problem is not None and "it is empty" in check.problem


async def test_unkeyed_writers_cannot_append_to_a_keyed_chain(database: Database) -> None:
    await fill(database, 2, KEY)
    with pytest.raises(ServiceUnavailable) as caught:
        await DatabaseAuditSink(database).record(event(9))
    assert caught.value.message == KEYED_LOG_MESSAGE
    assert (await verify_chain(database, key=KEY)).rows == 2


async def test_the_keyed_chain_continues_from_the_last_unkeyed_row(database: Database) -> None:
    await fill(database, 3, None)
    await fill(database, 3, KEY)
    with database.engine.connect() as conn:
        rows = list(conn.execute(select(audit_log).order_by(audit_log.c.id)))
    assert [r.hash_scheme for r in rows] == [SCHEME_SHA256_TOOL] * 3 + [SCHEME_HMAC] * 3
    assert rows[3].prev_hash == rows[2].hash
    check = await verify_chain(database, key=KEY)
    assert check.ok and check.keyed_from == 4 and check.rows == 6


@pytest.fixture(params=["postgres", "sqlite"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("empty_postgres_url"))
    return f"sqlite:///{tmp_path / 'fresh.db'}"


async def test_rows_from_before_migration_0002_still_verify(fresh_url: str) -> None:
    """Upgrade path: rows hashed by 0001 (the PostgreSQL trigger, or the old SQLite code) keep
    verifying, and keyed rows continue the chain from them."""
    database = Database.from_url(fresh_url)
    try:
        migrations.upgrade(database, "0001")
        with database.engine.begin() as conn:
            for i in range(3):
                _append_0001(conn, event(i))
        migrations.upgrade(database)
        await fill(database, 2, KEY)
        with database.engine.connect() as conn:
            rows = list(conn.execute(select(audit_log).order_by(audit_log.c.id)))
        assert [r.hash_scheme for r in rows] == [SCHEME_SHA256] * 3 + [SCHEME_HMAC] * 2
        check = await verify_chain(database, key=KEY)
        assert check.ok and check.rows == 5 and check.keyed_from == 4
    finally:
        database.close()


def _append_0001(conn: Connection, item: AuditEvent) -> None:
    """An append as the code of migration 0001's time did it (no tool, no scheme column)."""
    at = datetime.now(UTC)
    values = {
        "at": at,
        "service_id": item.service_id,
        "action": item.action,
        "token_key": item.token_key,
        "user_email": item.user_email,
        "result": item.result,
    }
    if conn.dialect.name == "postgresql":  # the 0001 trigger hashes it
        conn.execute(
            text(
                "INSERT INTO audit_log (at, service_id, action, token_key, user_email, result) "
                "VALUES (:at, :service_id, :action, :token_key, :user_email, :result)"
            ),
            values,
        )
        return
    head = conn.execute(text("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")).first()
    row_id, prev = (head[0] + 1, head[1]) if head else (1, "0" * 64)
    digest = chain_hash(
        prev, row_id, at, item.service_id, item.action, item.token_key, item.user_email, item.result, None
    )
    conn.execute(
        text(
            "INSERT INTO audit_log (id, at, service_id, action, token_key, user_email, result, prev_hash, hash) "
            "VALUES (:id, :at, :service_id, :action, :token_key, :user_email, :result, :prev, :hash)"
        ),
        {**values, "id": row_id, "prev": prev, "hash": digest},
    )


# ----- the operator's commands --------------------------------------------------------------


def cli(url: str, *args: str, audit_key: str | None = KEY_TEXT) -> tuple[int, str, str]:
    env = {"DATABASE_URL": url, "MCP_AUTH_ENCRYPTION_KEY": generate_key(), "MCP_OPERATOR_EMAIL": "ops@example.com"}
    if audit_key is not None:
        env["MCP_AUDIT_KEY"] = audit_key
    result = CliRunner().invoke(build_cli(DEMO, "unused:factory"), list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.usefixtures("token_functions_state")
def test_cli_verify_checkpoint_and_expect_head(database: Database, tmp_path: Path) -> None:
    url = database.engine.url.render_as_string(hide_password=False)
    asyncio.run(fill(database, 3, KEY))  # the CLI runs its own event loop: this test has none
    code, checkpoint, err = cli(url, "audit", "checkpoint")
    assert code == 0, err
    assert Checkpoint.parse(checkpoint) == asyncio.run(chain_head(database))
    code, out, _ = cli(url, "audit", "verify", "--expect-head", checkpoint.strip())
    assert code == 0
    assert (
        out
        == f"audit chain intact: 3 rows checked (ids 1 to 3), keyed with MCP_AUDIT_KEY from row 1; head {checkpoint}"
    )
    as_owner(database, "DELETE FROM audit_log WHERE id = 3")
    code, _, err = cli(url, "audit", "verify", "--expect-head", checkpoint.strip())
    assert code == 1 and err.startswith("error: audit chain broken at row 3: row 3 of checkpoint")
    assert len(err.strip().splitlines()) == 1
    code, _, err = cli(url, "audit", "verify", audit_key=None)
    assert code == 1 and "set MCP_AUDIT_KEY" in err
    code, _, err = cli(url, "audit", "verify", "--expect-head", "12:nothex")
    assert code == 1 and err.startswith("error: --expect-head: a checkpoint is ID:HASH")
    empty = Database.from_url(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        migrations.upgrade(empty)
    finally:
        empty.close()
    code, _, err = cli(f"sqlite:///{tmp_path / 'empty.db'}", "audit", "checkpoint")
    assert (code, err) == (1, "error: the audit log is empty: there is no head to checkpoint yet\n")


# ----- the server ---------------------------------------------------------------------------


async def test_server_logs_checkpoints_and_warns_without_a_key(
    sqlite_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(app_module, "CHECKPOINT_INTERVAL_SECONDS", 0.05)
    env = {"MCP_AUTH_MODE": "bearer", "MCP_BEARER_TOKENS": f"ci={DEMO_BEARER}", "DATABASE_URL": sqlite_url}
    unkeyed = Runtime.from_settings(make_settings(**env))
    await unkeyed.close()
    assert "MCP_AUDIT_KEY is not set" in caplog.text
    caplog.clear()
    runtime = Runtime.from_settings(make_settings(**env, MCP_AUDIT_KEY=KEY_TEXT))
    assert "MCP_AUDIT_KEY is not set" not in caplog.text
    database = Database.from_url(sqlite_url)
    try:
        await fill(database, 2, KEY)
        head = await chain_head(database)
    finally:
        database.close()
    app = build_http_app(FastMCP("demo"), runtime)
    async with running(app):
        for _ in range(100):
            if [r for r in caplog.records if r.getMessage() == "audit checkpoint"]:
                break
            await asyncio.sleep(0.02)
    logged = {getattr(r, "checkpoint", None) for r in caplog.records if r.getMessage() == "audit checkpoint"}
    assert logged == {str(head)}


async def test_a_tool_call_audit_row_names_the_tool_and_is_keyed(sqlite_url: str) -> None:
    import mcp_auth

    env = {
        "MCP_AUTH_MODE": "bearer",
        "MCP_BEARER_TOKENS": f"ci={DEMO_BEARER}",
        "DATABASE_URL": sqlite_url,
        "MCP_TOKEN_STORE": "postgres",
        "MCP_AUTH_ENCRYPTION_KEY": generate_key(),
        "MCP_AUDIT_KEY": KEY_TEXT,
    }
    mcp = FastMCP("demo")

    @mcp.tool(tags={NEEDS_UPSTREAM_TOKEN})
    def needs_token() -> int:
        return len(mcp_auth.current().service_token)

    runtime = Runtime.from_settings(make_settings(**env))
    await runtime.tokens.set("demo", "default", "shared-token-value")
    app = build_http_app(mcp, runtime)
    from mcp_auth.testing.clients import mcp_client

    async with running(app), mcp_client(app, {"Authorization": f"Bearer {DEMO_BEARER}"}) as client:
        assert (await client.call_tool("needs_token", {})).data == len("shared-token-value")
    database = Database.from_url(sqlite_url)
    try:
        with database.engine.connect() as conn:
            rows = list(conn.execute(select(audit_log).order_by(audit_log.c.id)))
        assert [(r.action, r.tool, r.hash_scheme) for r in rows] == [
            ("set_token", None, SCHEME_HMAC),
            ("get_token", "needs_token", SCHEME_HMAC),
        ]
        assert (await verify_chain(database, key=KEY)).ok
    finally:
        database.close()


async def test_status_warns_in_the_log_when_the_server_could_rewrite_the_audit_log(
    postgres_database: Database, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The test server connects as the PostgreSQL superuser: /status stays ready (the warning is
    for the operator's log, not the anonymous body), once per process."""
    caplog.set_level(logging.WARNING, logger="mcp_auth.runtime")
    env = {
        "MCP_AUTH_MODE": "bearer",
        "MCP_BEARER_TOKENS": f"ci={DEMO_BEARER}",
        "DATABASE_URL": database_url,
        "DEMO_API_TOKEN": "token-from-env-0001",
        "MCP_AUDIT_KEY": KEY_TEXT,
    }
    app = build_http_app(FastMCP("demo"), Runtime.from_settings(make_settings(**env)))
    async with running(app) as http:
        answers = [await http.get("/status") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert all("superuser" not in a.text for a in answers)
    warnings = [r for r in caplog.records if r.getMessage() == "database role has too many privileges"]
    assert len(warnings) == 1 and "superuser" in str(getattr(warnings[0], "reason", ""))


async def test_an_unknown_hash_scheme_is_a_broken_row_not_a_crash(database: Database) -> None:
    await fill(database, 3, KEY)
    as_owner(database, "UPDATE audit_log SET hash_scheme = 4 WHERE id = 2")
    check = await verify_chain(database, key=KEY)
    assert (check.ok, check.first_broken_id, check.problem) == (False, 2, "its hash scheme 4 is unknown")
