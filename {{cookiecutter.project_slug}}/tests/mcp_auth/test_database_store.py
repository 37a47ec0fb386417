"""The encrypted database store against real PostgreSQL (and SQLite for local development)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import mcp_auth
import pytest
from mcp_auth.audit import AuditEvent
from mcp_auth.crypto import Keyring, generate_key, key_id, parse_key
from mcp_auth.db import Database
from mcp_auth.db import engine as db_module
from mcp_auth.db.audit_log import DatabaseAuditSink, verify_chain
from mcp_auth.db.migrations import require_schema
from mcp_auth.db.models import audit_log, tokens
from mcp_auth.errors import ConfigError, DecryptionError, ServiceUnavailable
from mcp_auth.stores.base import TokenStore
from mcp_auth.stores.database import DatabaseTokenStore
from mcp_auth.testing.settings import make_settings
from sqlalchemy import Row, Table, select, text, update
from sqlalchemy import event as sqlalchemy_event

OPERATOR = "ops@example.com"


def kid(key: str) -> str:
    return key_id(parse_key(key, name="key"))


def make_store(database: Database, current: str, *previous: str) -> DatabaseTokenStore:
    ring = Keyring(parse_key(current, name="k"), [parse_key(p, name="k") for p in previous])
    return DatabaseTokenStore(database, ring, actor=OPERATOR, service_name="demo")


def rows(database: Database, table: Table = tokens) -> list[Row[Any]]:
    with database.engine.connect() as conn:
        return list(conn.execute(select(table).order_by(table.c.id)))


def audit_actions(database: Database) -> list[tuple[str, str | None, str, str]]:
    return [(r.action, r.token_key, r.result, r.user_email) for r in rows(database, audit_log)]


async def test_round_trip_and_persistence_across_restarts(database: Database) -> None:
    key = generate_key()
    store = make_store(database, key)
    assert isinstance(store, TokenStore) and store.name == "postgres"
    await store.set("demo", "default", "token-one")
    await store.set("demo", "alice@example.com", "token-two")
    await store.set("demo", "default", "token-three")  # replace
    assert await store.get("demo", "default") == "token-three"
    assert await store.get("demo", "nobody") is None
    url = database.engine.url.render_as_string(hide_password=False)

    restarted = Database.from_url(url, slug="demo-mcp")  # a new process: new engine, new store
    try:
        again = make_store(restarted, key)
        assert await again.get("demo", "alice@example.com") == "token-two"
        assert await again.get("demo", "default") == "token-three"
        listed = await again.list()
    finally:
        restarted.close()
    assert [(t.service, t.key, t.key_id) for t in listed] == [
        ("demo", "alice@example.com", kid(key)),
        ("demo", "default", kid(key)),
    ]
    assert listed[1].updated_at >= listed[1].created_at
    assert all("token-" not in repr(t) for t in listed)


async def test_rows_hold_only_ciphertext(database: Database) -> None:
    await make_store(database, generate_key()).set("demo", "default", "plaintext-token-value")
    (row,) = rows(database)
    assert set(row._mapping) >= {
        "service_id",
        "key",
        "ciphertext",
        "nonce",
        "key_id",
        "created_at",
        "updated_at",
    }
    assert b"plaintext-token-value" not in bytes(row.ciphertext) and len(row.nonce) == 12


async def test_ciphertext_copied_to_another_row_fails(database: Database) -> None:
    store = make_store(database, generate_key())
    await store.set("demo", "alice", "alice-token")
    await store.set("demo", "bob", "bob-token")
    alice = next(r for r in rows(database) if r.key == "alice")
    with database.engine.begin() as conn:
        conn.execute(update(tokens).where(tokens.c.key == "bob").values(ciphertext=alice.ciphertext, nonce=alice.nonce))
    with pytest.raises(DecryptionError, match="demo/bob"):
        await store.get("demo", "bob")


async def test_wrong_key_names_the_key_id(database: Database) -> None:
    written_with = generate_key()
    await make_store(database, written_with).set("demo", "default", "secret")
    with pytest.raises(DecryptionError) as caught:
        await make_store(database, generate_key()).get("demo", "default")
    assert caught.value.message.startswith(
        f"Invalid encryption key: token demo/default was encrypted with key id {kid(written_with)}, "
        "which is not configured"
    )


async def test_tampered_row_is_a_clear_error(database: Database) -> None:
    store = make_store(database, generate_key())
    await store.set("demo", "default", "secret")
    (row,) = rows(database)
    with database.engine.begin() as conn:
        flipped = bytes([row.ciphertext[0] ^ 0xFF]) + bytes(row.ciphertext[1:])
        conn.execute(update(tokens).values(ciphertext=flipped))
    with pytest.raises(DecryptionError, match=r"demo/default .*modified"):
        await store.get("demo", "default")


async def test_writes_are_audited_in_the_same_transaction(database: Database) -> None:
    store = make_store(database, generate_key())
    await store.set("demo", "default", "secret")
    assert await store.get_audited("demo", "default", "alice@example.com") == "secret"
    assert await store.get_audited("demo", "missing", "alice@example.com") is None
    assert await store.get_audited("demo", "missing", "alice@example.com", audit_missing=False) is None
    assert await store.delete("demo", "default") is True
    assert await store.delete("demo", "default") is False
    assert audit_actions(database) == [
        ("set_token", "default", "success", OPERATOR),
        ("get_token", "default", "success", "alice@example.com"),
        ("get_token", "missing", "failure", "alice@example.com"),
        ("delete_token", "default", "success", OPERATOR),
        ("delete_token", "default", "failure", OPERATOR),
    ]


async def test_undecryptable_get_is_audited_as_failure(database: Database) -> None:
    await make_store(database, generate_key()).set("demo", "default", "secret")
    with pytest.raises(DecryptionError):
        await make_store(database, generate_key()).get_audited("demo", "default", "alice@example.com")
    last = rows(database, audit_log)[-1]
    assert (last.action, last.result) == ("get_token", "failure") and "key id" in last.detail


async def test_tampered_row_is_audited_as_failure_only(database: Database) -> None:
    """Nothing was handed out, so the log must not claim a success (PostgreSQL writes the success
    row optimistically in the read statement and rolls it back when decryption fails)."""
    store = make_store(database, generate_key())
    await store.set("demo", "default", "secret")
    (row,) = rows(database)
    with database.engine.begin() as conn:
        conn.execute(update(tokens).values(ciphertext=bytes([row.ciphertext[0] ^ 0xFF]) + bytes(row.ciphertext[1:])))
    before = len(rows(database, audit_log))
    with pytest.raises(DecryptionError):
        await store.get_audited("demo", "default", "alice@example.com")
    after = rows(database, audit_log)[before:]
    assert [(r.action, r.result, r.user_email) for r in after] == [("get_token", "failure", "alice@example.com")]
    assert "modified" in after[0].detail


async def test_concurrent_reads_share_a_commit_and_a_bad_row_fails_alone(database: Database) -> None:
    """Reads that arrive together are committed together (one transaction, one chain lock); one
    whose row was tampered with rolls that batch back, fails on its own with a failure row, and
    every other caller still gets its token with its own success row."""
    store = make_store(database, generate_key())
    for index in range(6):
        await store.set("demo", f"user{index}", f"secret-{index}")
    with database.engine.begin() as conn:
        (row,) = conn.execute(select(tokens.c.ciphertext).where(tokens.c.key == "user3")).all()
        damaged = bytes([row.ciphertext[0] ^ 0xFF]) + bytes(row.ciphertext[1:])
        conn.execute(update(tokens).where(tokens.c.key == "user3").values(ciphertext=damaged))
    checkouts: list[str] = []
    sqlalchemy_event.listen(database.engine, "checkout", lambda *args: checkouts.append("checkout"))
    reads = [store.get_audited("demo", f"user{index}", f"caller{index}@example.com") for index in range(6)]
    results = await asyncio.gather(*reads, return_exceptions=True)
    assert [r for i, r in enumerate(results) if i != 3] == [f"secret-{i}" for i in range(6) if i != 3]
    assert isinstance(results[3], DecryptionError)
    found = [(key, result, user) for key, result, user, _, _ in get_token_rows(database)]
    assert sorted(found) == sorted(
        [(f"user{i}", "success", f"caller{i}@example.com") for i in range(6) if i != 3]
        + [("user3", "failure", "caller3@example.com")]
    )
    assert (await verify_chain(database)).ok
    healthy = [store.get_audited("demo", f"user{index}", "again@example.com") for index in (0, 1, 2, 4, 5)]
    checkouts.clear()
    assert await asyncio.gather(*healthy) == [f"secret-{i}" for i in (0, 1, 2, 4, 5)]
    assert checkouts == ["checkout"]  # five concurrent reads, one connection, one transaction


def get_token_rows(database: Database) -> list[tuple[str, str, str, str | None, str | None]]:
    """(token_key, result, user_email, tool, detail) of every get_token row, oldest first."""
    return [
        (r.token_key, r.result, r.user_email, r.tool, r.detail)
        for r in rows(database, audit_log)
        if r.action == "get_token"
    ]


@pytest.mark.parametrize("audit_key", [None, parse_key(generate_key(), name="k")], ids=["unkeyed", "keyed"])
async def test_get_first_audited_takes_the_first_key_stored(database: Database, audit_key: bytes | None) -> None:
    """On both backends, and with MCP_AUDIT_KEY (the keyed chain is linked in Python, not by the
    one-statement path)."""
    ring = Keyring(parse_key(generate_key(), name="k"))
    store = DatabaseTokenStore(database, ring, actor=OPERATOR, service_name="demo", audit_key=audit_key)
    keys = ["alice@example.com", "default"]
    await store.set("demo", "default", "shared")
    assert await store.get_first_audited("demo", keys, "alice@example.com", tool="search") == ("default", "shared")
    await store.set("demo", "alice@example.com", "own")
    assert await store.get_first_audited("demo", keys, "alice@example.com", tool="search") == (
        "alice@example.com",
        "own",
    )
    assert await store.get_first_audited("demo", ["bob@example.com", "nobody"], "bob@example.com") is None
    assert get_token_rows(database) == [
        ("default", "success", "alice@example.com", "search", None),  # the row names the key used
        ("alice@example.com", "success", "alice@example.com", "search", None),
        # Neither stored: ONE failure row, naming the last key.
        ("nobody", "failure", "bob@example.com", None, "no token stored for service 'demo', key 'nobody'"),
    ]
    check = await verify_chain(database, key=audit_key)
    assert check.ok and check.keyed_from == (None if audit_key is None else 1)


@pytest.mark.parametrize("damage", ["tampered", "unknown key id"])
async def test_get_first_audited_stops_at_an_undecryptable_row(database: Database, damage: str) -> None:
    """The caller's own row fails to decrypt: a failure row naming it, no fallback to default."""
    store = make_store(database, generate_key())
    await store.set("demo", "default", "shared")
    await store.set("demo", "alice", "own")
    with database.engine.begin() as conn:
        if damage == "tampered":
            conn.execute(update(tokens).where(tokens.c.key == "alice").values(nonce=b"\0" * 12))
        else:
            conn.execute(update(tokens).where(tokens.c.key == "alice").values(key_id="0123456789abcdef"))
    with pytest.raises(DecryptionError, match="demo/alice"):
        await store.get_first_audited("demo", ["alice", "default"], "alice", tool="search")
    ((key, result, actor, tool, detail),) = get_token_rows(database)
    assert (key, result, actor, tool) == ("alice", "failure", "alice", "search") and "demo/alice" in str(detail)


async def test_get_first_audited_needs_a_key(sqlite_database: Database) -> None:
    with pytest.raises(ValueError, match="at least one key"):
        await make_store(sqlite_database, generate_key()).get_first_audited("demo", [])


async def test_rotate_key_re_encrypts_everything(database: Database) -> None:
    old, new = generate_key(), generate_key()
    store = make_store(database, old)
    for i in range(25):
        await store.set("demo", f"user{i}", f"value-{i}")
    progress: list[tuple[int, int]] = []
    assert await store.rotate_key(old, new, progress=lambda done, total: progress.append((done, total))) == 25
    assert progress[-1] == (25, 25)
    assert {r.key_id for r in rows(database)} == {kid(new)}
    fresh = make_store(database, new)  # the old key is no longer needed at all
    assert [await fresh.get("demo", f"user{i}") for i in range(25)] == [f"value-{i}" for i in range(25)]
    # This store now writes under the new key; re-running the rotation is a no-op.
    await store.set("demo", "later", "v")
    assert rows(database)[-1].key_id == kid(new)
    assert await store.rotate_key(old, new) == 0
    rotation = next(r for r in rows(database, audit_log) if r.action == "rotate_key")
    assert rotation.result == "success" and rotation.user_email == OPERATOR and kid(new) in rotation.detail


@pytest.mark.parametrize("failure", ["unknown key", "tampered row"])
async def test_rotate_key_is_all_or_nothing(database: Database, failure: str) -> None:
    old, new = generate_key(), generate_key()
    store = make_store(database, old)
    for i in range(10):
        await store.set("demo", f"user{i}", f"value-{i}")
    if failure == "unknown key":
        await make_store(database, generate_key()).set("demo", "user5", "written-with-a-third-key")
    else:
        with database.engine.begin() as conn:
            conn.execute(update(tokens).where(tokens.c.key == "user5").values(nonce=b"\0" * 12))
    before = [(r.id, bytes(r.ciphertext), bytes(r.nonce), r.key_id) for r in rows(database)]

    with pytest.raises(DecryptionError, match=r"rotation aborted, nothing was re-encrypted: .*demo/user5"):
        await store.rotate_key(old, new)

    assert [(r.id, bytes(r.ciphertext), bytes(r.nonce), r.key_id) for r in rows(database)] == before
    assert await store.get("demo", "user1") == "value-1"
    last = rows(database, audit_log)[-1]
    assert (last.action, last.result) == ("rotate_key", "failure") and "demo/user5" in last.detail
    # The store keeps its key after a failed rotation.
    await store.set("demo", "user1", "still-old-key")
    assert rows(database)[1].key_id == kid(old)


async def test_rotate_to_current_reads_previous_keys(database: Database) -> None:
    first, second, current = generate_key(), generate_key(), generate_key()
    await make_store(database, first).set("demo", "a", "value-a")
    await make_store(database, second).set("demo", "b", "value-b")
    await make_store(database, current).set("demo", "c", "value-c")
    store = make_store(database, current, first, second)
    assert await store.rotate_to_current() == 2
    assert {r.key_id for r in rows(database)} == {kid(current)}
    only_current = make_store(database, current)
    assert [await only_current.get("demo", k) for k in "abc"] == ["value-a", "value-b", "value-c"]
    # A replica still configured with a retired key may not write rows the fleet cannot read.
    with pytest.raises(ConfigError, match=f"key id {kid(first)}.* retired"):
        await make_store(database, first).set("demo", "d", "value-d")
    assert await only_current.get("demo", "d") is None


async def test_rotate_to_current_names_a_key_it_does_not_have(database: Database) -> None:
    stray = generate_key()
    await make_store(database, stray).set("demo", "x", "v")
    with pytest.raises(DecryptionError, match=f"key id {kid(stray)}, which is not MCP_AUTH_ENCRYPTION_KEY"):
        await make_store(database, generate_key(), generate_key()).rotate_to_current()


async def test_writers_racing_a_rotation_never_use_the_retired_key(postgres_database: Database) -> None:
    database = postgres_database
    old, new = generate_key(), generate_key()
    store = make_store(database, old)
    with database.engine.begin() as conn:  # 3000 rows under the old key, fast
        ring = store.keyring
        values = []
        for i in range(3000):
            envelope = ring.encrypt("demo", f"k{i}", f"v{i}")
            values.append(
                {
                    "service_id": "demo",
                    "key": f"k{i}",
                    "ciphertext": envelope.ciphertext,
                    "nonce": envelope.nonce,
                    "key_id": envelope.key_id,
                }
            )
        conn.execute(tokens.insert(), values)
    url = database.engine.url.render_as_string(hide_password=False)
    other_process = Database.from_url(url, slug="demo-mcp")
    stale_replica = make_store(other_process, old)  # still configured with the old key

    loop = asyncio.get_running_loop()
    rotating = asyncio.Event()
    called = threading.Event()

    def progress(done: int, total: int) -> None:  # runs in the rotation's worker thread
        if not called.is_set():
            called.set()
            loop.call_soon_threadsafe(rotating.set)
            time.sleep(0.3)  # hold the rotation open while the writers queue up behind it

    rotation = asyncio.create_task(store.rotate_key(old, new, progress=progress))
    await rotating.wait()
    same_process = asyncio.create_task(store.set("demo", "written-during-rotation", "fresh-1"))
    stale = asyncio.create_task(stale_replica.set("demo", "stale-write", "fresh-2"))
    try:
        assert await rotation == 3000
        await same_process
        with pytest.raises(ConfigError, match="retired"):
            await stale
    finally:
        other_process.close()

    assert {r.key_id for r in rows(database)} == {kid(new)}
    assert await make_store(database, new).get("demo", "written-during-rotation") == "fresh-1"
    assert await make_store(database, new).get("demo", "stale-write") is None


async def test_check_reports_what_is_missing(database: Database) -> None:
    key = generate_key()
    store = make_store(database, key)
    with pytest.raises(ServiceUnavailable, match=r"no token stored for demo/default \(run 'demo-mcp tokens set"):
        await store.check()
    await store.set("demo", "default", "v")
    await store.check()
    with pytest.raises(ServiceUnavailable, match=f"key id {kid(key)}"):
        await make_store(database, generate_key()).check()


async def test_from_settings_uses_env_keys_and_operator(database: Database) -> None:
    key = generate_key()
    settings = make_settings(MCP_AUTH_ENCRYPTION_KEY=key, MCP_OPERATOR_EMAIL="cli@example.com")
    store = DatabaseTokenStore.from_settings(settings, database)
    assert store.actor == "cli@example.com" and store.keyring.current_id == kid(key)
    await store.set("demo", "default", "v")
    await store.close()  # does not close a database it was handed
    assert await store.get("demo", "default") == "v"


async def test_a_database_that_hangs_is_a_503_within_the_deadline() -> None:
    """A server that accepts connections and then never answers (frozen, or a black-holing
    network) must not hang a request: work with a deadline gives up with a 503."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepted by the kernel, never answered
        port = silent.getsockname()[1]
        database = Database.from_url(f"postgresql://admin@127.0.0.1:{port}/vault", slug="demo-mcp")
        try:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable, match=r"^PostgreSQL did not answer within 0.3 s$"):
                await database.run(lambda conn: conn.execute(text("SELECT 1")).scalar_one(), deadline=0.3)
            assert time.monotonic() - started < 1.0
        finally:
            database.close()
    assert db_module.REQUEST_DEADLINE_SECONDS < 2.0  # the contract: 503 within 2 s


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://admin:s3cret-pw@127.0.0.1:1/vault", "PostgreSQL connection failed"),
        ("sqlite:////nonexistent-dir/s3cret-pw/vault.db", "database connection failed"),
    ],
)
async def test_database_down_is_a_clean_503(url: str, message: str, caplog: pytest.LogCaptureFixture) -> None:
    database = Database.from_url(url, slug="demo-mcp")
    store = make_store(database, generate_key())
    calls = [
        store.get("demo", "default"),
        store.get_audited("demo", "default", "a@example.com"),
        store.set("demo", "default", "v"),
        store.delete("demo", "default"),
        store.rotate_to_current(),
        store.list(),
        store.check(),
        database.check(),
        DatabaseAuditSink(database).record(AuditEvent("get_token", "demo", "default", "a", "success")),
    ]
    try:
        with caplog.at_level(logging.WARNING):
            for call in calls:
                with pytest.raises(ServiceUnavailable) as caught:
                    await call
                assert str(caught.value) == message
                # No chained driver error (its text names host and port) rides along.
                error = caught.value
                assert error.__cause__ is None and (error.__suppress_context__ or error.__context__ is None)
        with pytest.raises(ServiceUnavailable, match=f"^{message}$"):
            require_schema(database)
    finally:
        database.close()
    assert "s3cret-pw" not in caplog.text


def kill_connections(database: Database) -> int:
    """What a PostgreSQL restart does to the pool's connections."""
    admin = Database.from_url(database.engine.url.render_as_string(hide_password=False))
    try:
        with admin.engine.begin() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
            return int(killed)
    finally:
        admin.close()


async def test_recovers_after_a_restart_without_a_restart_of_ours(postgres_database: Database) -> None:
    store = make_store(postgres_database, generate_key())
    sink = DatabaseAuditSink(postgres_database)
    await store.set("demo", "default", "v")
    assert await store.get("demo", "default") == "v"  # the pool now holds a live connection
    assert kill_connections(postgres_database) >= 1
    # A read finds the dead connection, the pool is invalidated, the read retries once.
    assert await store.get("demo", "default") == "v"
    # Writes do not retry, but they get fresh connections now.
    await sink.record(AuditEvent("get_token", "demo", "default", "a@example.com", "success"))
    await store.set("demo", "default", "w")


async def test_idle_connections_are_pinged_before_use(
    postgres_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db_module, "PING_IDLE_SECONDS", 0.0)
    store = make_store(postgres_database, generate_key())
    await store.set("demo", "default", "v")
    assert kill_connections(postgres_database) >= 1
    # get_audited writes, so it never retries: only the checkout ping can save it.
    assert await store.get_audited("demo", "default", "a@example.com") == "v"


async def test_event_loop_keeps_running_during_database_work(postgres_database: Database) -> None:
    store = make_store(postgres_database, generate_key())
    await store.set("demo", "default", "v")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        results = await asyncio.gather(*(store.get_audited("demo", "default", f"u{i}") for i in range(40)))
    finally:
        task.cancel()
    assert results == ["v"] * 40 and ticks > 40


@pytest.mark.usefixtures("token_functions_state")
async def test_package_level_api_uses_the_environment(
    postgres_database: Database, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcp_auth.testing.settings import DEMO

    first, second = generate_key(), generate_key()
    for name, value in {
        "DATABASE_URL": database_url,
        "MCP_TOKEN_STORE": "postgres",
        "MCP_AUTH_ENCRYPTION_KEY": first,
        "MCP_OPERATOR_EMAIL": "script@example.com",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MCP_AUTH_PREVIOUS_KEYS", raising=False)
    mcp_auth.configure(DEMO)
    try:
        await mcp_auth.set_token("demo", "default", "api-value")
        assert await mcp_auth.get_token("demo", "default") == "api-value"
        assert await mcp_auth.get_token("demo", "nobody") is None
        assert await mcp_auth.rotate_key(first, second) == 1
        assert await mcp_auth.get_token("demo", "default") == "api-value"  # the store switched keys
        assert await mcp_auth.delete_token("demo", "default") is True
    finally:
        await mcp_auth.close()
        mcp_auth.configure()
    assert [(a, k, r) for a, k, r, _ in audit_actions(postgres_database)] == [
        ("set_token", "default", "success"),
        ("get_token", "default", "success"),
        ("get_token", "nobody", "failure"),
        ("rotate_key", None, "success"),
        ("get_token", "default", "success"),
        ("delete_token", "default", "success"),
    ]
    assert {who for *_, who in audit_actions(postgres_database)} == {"script@example.com"}
