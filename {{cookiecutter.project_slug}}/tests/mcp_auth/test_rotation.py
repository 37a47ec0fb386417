"""Key rotation's bulk path (``mcp_auth.db.reencryption``) and the fillfactor it relies on (0004).

The rotation tests of ``test_database_store.py`` cover the contract (every token under the new
key, the audit row, all or nothing on a bad row); these cover what the UPDATE-based path adds:
only the encrypted columns change, the UPDATE is HOT on PostgreSQL, and a rotation that dies
after rewriting every row but before its commit leaves every row under the old key.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from alembic import command
from mcp_auth.crypto import Keyring, generate_key, key_id, parse_key
from mcp_auth.db import Database, migrations
from mcp_auth.db.models import audit_log, retired_encryption_keys, tokens
from mcp_auth.db.reencryption import reencrypt_all
from mcp_auth.errors import ServiceUnavailable
from mcp_auth.stores import database as database_store
from mcp_auth.stores.database import DatabaseTokenStore
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection

# Services and keys the AAD must keep apart, non-ASCII included.
NAMES = [("demo", f"user{i}") for i in range(8)] + [("other", "user0"), ("démo", "ключ"), ("demo", "a/b c")]


def ring(key: str) -> Keyring:
    return Keyring(parse_key(key, name="k"))


def make_store(database: Database, key: str) -> DatabaseTokenStore:
    return DatabaseTokenStore(database, ring(key), actor="ops@example.com")


async def store_all(database: Database, key: str) -> dict[tuple[str, str], str]:
    store = make_store(database, key)
    values = {(service, name): f"value-{service}-{name}" for service, name in NAMES}
    for (service, name), value in values.items():
        await store.set(service, name, value)
    return values


def token_rows(database: Database) -> list[Any]:
    with database.engine.connect() as conn:
        return list(conn.execute(select(tokens).order_by(tokens.c.id)))


async def read_all(database: Database, key: str) -> dict[tuple[str, str], str | None]:
    store = make_store(database, key)
    return {(service, name): await store.get(service, name) for service, name in NAMES}


def fillfactor(conn: Connection) -> list[str] | None:
    options: list[str] | None = conn.execute(
        text("SELECT reloptions FROM pg_class WHERE oid = 'tokens'::regclass")
    ).scalar_one()
    return options


def test_0004_fillfactor_downgrade_and_upgrade(database: Database) -> None:
    """Inside one transaction, rolled back: the run's PostgreSQL database stays at head."""
    postgres = database.is_postgres
    with database.engine.connect() as conn, conn.begin() as transaction:
        if postgres:
            assert fillfactor(conn) == ["fillfactor=50"]
        command.downgrade(migrations.alembic_config(conn), "0003")
        assert migrations.current_revisions(conn) == {"0003"}
        if postgres:
            assert fillfactor(conn) is None
        assert migrations.upgrade_on(conn) == {"0004"}
        if postgres:
            assert fillfactor(conn) == ["fillfactor=50"]
        transaction.rollback()


async def test_rotation_changes_only_the_encrypted_columns(database: Database) -> None:
    old, new = generate_key(), generate_key()
    values = await store_all(database, old)
    before = token_rows(database)

    assert await make_store(database, old).rotate_key(old, new) == len(NAMES)

    after = token_rows(database)
    kept = ("id", "service_id", "key", "created_at", "updated_at")
    assert [[row._mapping[c] for c in kept] for row in after] == [[row._mapping[c] for c in kept] for row in before]
    assert {row.key_id for row in after} == {key_id(parse_key(new, name="k"))}
    assert all(a.nonce != b.nonce and a.ciphertext != b.ciphertext for a, b in zip(after, before, strict=True))
    assert await read_all(database, new) == values
    with database.engine.connect() as conn:
        detail = conn.execute(select(audit_log.c.detail).where(audit_log.c.action == "rotate_key")).scalar_one()
    assert detail == f"re-encrypted {len(NAMES)} tokens under key id {key_id(parse_key(new, name='k'))}"


def test_the_rotation_update_is_hot(postgres_database: Database) -> None:
    """Fillfactor 50 leaves room on every page: no row moves, no index entry is added. Enough rows
    to fill pages (about 50 a page at fillfactor 100, where most updates would not be HOT)."""
    old, new = ring(generate_key()), ring(generate_key())
    count = 400
    rows = []
    for i in range(count):
        envelope = old.encrypt("demo", f"k{i}", f"v{i}")
        rows.append({"service_id": "demo", "key": f"k{i}", "ciphertext": envelope.ciphertext, "nonce": envelope.nonce})
    with postgres_database.engine.begin() as conn:
        conn.execute(tokens.insert().values(key_id=old.current_id), rows)
    with postgres_database.engine.connect() as conn, conn.begin() as transaction:
        before = updates(conn)
        assert reencrypt_all(conn, old, new, "the old key", None) == count
        after = updates(conn)
        assert (after[0] - before[0], after[1] - before[1]) == (count, count)
        transaction.rollback()


def updates(conn: Connection) -> tuple[int, int]:
    """Rows of tokens this backend updated, and how many of them HOT, not yet reported to the
    statistics (so no waiting for them): what this transaction did is the difference."""
    updated, hot = conn.execute(
        text(
            "SELECT pg_stat_get_xact_tuples_updated('tokens'::regclass), "
            "pg_stat_get_xact_tuples_hot_updated('tokens'::regclass)"
        )
    ).one()
    return int(updated), int(hot)


async def test_a_rotation_killed_before_its_commit_leaves_every_row_under_the_old_key(
    postgres_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every row rewritten, the commit not yet sent: what the server sees of a rotation whose
    process is SIGKILLed at its worst moment is its connection going away, as here."""
    database = postgres_database
    old, new = generate_key(), generate_key()
    values = await store_all(database, old)
    before = token_rows(database)
    rewritten, resume = threading.Event(), threading.Event()
    backend: list[int] = []

    def rewrite_then_wait(conn: Connection, *args: Any) -> int:
        count = reencrypt_all(conn, *args)
        driver = conn.connection.driver_connection
        assert driver is not None
        backend.append(driver.info.backend_pid)
        rewritten.set()
        resume.wait(10)
        return count

    monkeypatch.setattr(database_store, "reencrypt_all", rewrite_then_wait)
    rotation = asyncio.create_task(make_store(database, old).rotate_key(old, new))
    try:
        assert await asyncio.to_thread(rewritten.wait, 10)
        assert await read_all(database, old) == values  # readers meanwhile: the old rows
        with database.engine.connect() as conn:
            assert conn.execute(select(func.pg_terminate_backend(backend[0]))).scalar_one()
    finally:
        resume.set()
    with pytest.raises(ServiceUnavailable):
        await rotation

    assert token_rows(database) == before
    assert await read_all(database, old) == values
    with database.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(retired_encryption_keys)).scalar_one() == 0
    monkeypatch.undo()  # the locks went with the connection: the rotation runs again
    assert await make_store(database, old).rotate_key(old, new) == len(NAMES)
    assert await read_all(database, new) == values
