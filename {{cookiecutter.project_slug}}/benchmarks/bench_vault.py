"""Benchmark the PostgreSQL token vault (not a test; run it by hand or in a perf job).

    uv run python benchmarks/bench_vault.py [--iterations 3000] [--sizes 10000,100000] [--repeats 5]

Uses BENCH_DATABASE_URL, else TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres.
Creates a scratch database next to it, migrates it, and drops it at the end. Prints:
- key rotation for each size, median of --repeats runs, each on a freshly filled and vacuumed
  table: ``rotate_key`` (the whole call: lock, re-encryption, audit row, commit) next to the
  floor, the same database work in plain psycopg without any cryptography (read the rows, COPY
  ciphertexts encrypted beforehand into a temporary table, UPDATE ... FROM, commit), and their
  ratio. One small untimed rotation first, so the first size does not pay for connecting and
  compiling statements;
- the per-call latency of handing out a token: read + AES-GCM decrypt + audit insert
  (hash-chained, committed), both as the server does it (store.get, then the audit sink) and
  through the single-hop ``get_audited``; plus concurrent throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable

import psycopg
from mcp_auth.crypto import Envelope, Keyring, generate_key, parse_key
from mcp_auth.db import Database, migrations, normalize_url
from mcp_auth.db.audit_log import DatabaseAuditSink
from mcp_auth.identity import Identity
from mcp_auth.stores.database import DatabaseTokenStore
from mcp_auth.tokens import TokenService
from psycopg.types.string import BytesBinaryDumper
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return (
        f"p50 {pick(0.50):6.3f} ms  p90 {pick(0.90):6.3f} ms  p99 {pick(0.99):6.3f} ms  "
        f"mean {statistics.fmean(ordered) * 1000:6.3f} ms"
    )


_COLUMNS = ("service_id", "key", "ciphertext", "nonce", "key_id")


def sealed_rows(keyring: Keyring, count: int) -> list[tuple[str, str, bytes, bytes, str]]:
    """``count`` token rows encrypted under the keyring's current key."""
    rows = []
    for i in range(count):
        key = f"user{i}@example.com"
        envelope = keyring.encrypt("bench", key, f"token-{i}-{secrets.token_hex(16)}")
        rows.append(("bench", key, envelope.ciphertext, envelope.nonce, envelope.key_id))
    return rows


def fill(database: Database, rows: list[tuple[str, str, bytes, bytes, str]]) -> None:
    """Replace the tokens with ``rows`` (COPY), then VACUUM ANALYZE like a settled table (setup)."""
    with database.engine.begin() as conn:
        conn.execute(text("TRUNCATE tokens RESTART IDENTITY"))
        driver = conn.connection.driver_connection
        assert driver is not None
        with (
            driver.cursor() as cursor,
            cursor.copy(f"COPY tokens ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["text", "text", "bytea", "bytea", "text"])
            for row in rows:
                copy.write_row(row)
    with database.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM (ANALYZE) tokens"))


def floor(database: Database, sealed: list[tuple[str, str, bytes, bytes, str]]) -> float:
    """Seconds for the database work of a rotation without its cryptography: read the rows, COPY
    the ``sealed`` ciphertexts (made beforehand) into a temporary table, UPDATE ... FROM, commit.
    Plain psycopg: no SQLAlchemy, no lock, no audit row."""
    new_id = sealed[0][4]
    by_key = {key: (ciphertext, nonce) for _, key, ciphertext, nonce, _ in sealed}
    url = database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as conn, conn.cursor(binary=True) as cursor:
        started = time.perf_counter()
        rows = cursor.execute(
            "SELECT id, service_id, key, ciphertext, nonce, key_id FROM tokens WHERE key_id <> %s", (new_id,)
        ).fetchall()
        # The work_mem the rotation sets for its join (mcp_auth.db.reencryption), so the two compare.
        cursor.execute("SELECT set_config('work_mem', %s, true)", (f"{max(4096, len(rows) * 64 // 1024)}kB",))
        cursor.execute("CREATE TEMPORARY TABLE floor (id int8, ciphertext bytea, nonce bytea) ON COMMIT DROP")
        cursor.adapters.register_dumper(None, BytesBinaryDumper)  # the C dumper the rotation uses too
        with cursor.copy("COPY floor (id, ciphertext, nonce) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "bytea", "bytea"])
            for row in rows:
                copy.write_row((row[0], *by_key[row[2]]))
        cursor.execute(
            "UPDATE tokens SET ciphertext = f.ciphertext, nonce = f.nonce, key_id = %s "
            "FROM floor f WHERE tokens.id = f.id",
            (new_id,),
        )
        conn.commit()
        elapsed = time.perf_counter() - started
    assert len(rows) == len(sealed)
    return elapsed


async def rotation(database: Database, old: str, rows: list[tuple[str, str, bytes, bytes, str]]) -> float:
    """Seconds for ``rotate_key`` of ``rows`` (stored under ``old``) to a new key."""
    fill(database, rows)
    store = DatabaseTokenStore(database, Keyring(parse_key(old, name="old")), actor="bench@example.com")
    started = time.perf_counter()
    count = await store.rotate_key(old, generate_key())
    elapsed = time.perf_counter() - started
    assert count == len(rows)
    return elapsed


async def bench_rotation(database: Database, sizes: list[int], repeats: int) -> None:
    old = generate_key()
    old_ring, new_ring = Keyring(parse_key(old, name="old")), Keyring(parse_key(generate_key(), name="new"))
    await rotation(database, old, sealed_rows(old_ring, 100))  # warm-up, not timed
    with database.engine.connect() as conn:
        options = conn.execute(text("SELECT reloptions FROM pg_class WHERE relname = 'tokens'")).scalar_one()
    print(f"key rotation, one transaction, median of {repeats} (tokens table options: {options or 'defaults'})")
    print(f"  {'tokens':>7}  {'floor':>8}  {'rotate_key':>10}  ratio")
    for size in sizes:
        rows, sealed = sealed_rows(old_ring, size), sealed_rows(new_ring, size)
        floors, ours = [], []
        for _ in range(repeats):  # alternating, so a noisy neighbour hits both alike
            fill(database, rows)
            floors.append(floor(database, sealed))
            ours.append(await rotation(database, old, rows))
        low, mine = statistics.median(floors), statistics.median(ours)
        print(
            f"  {size:>7}  {low:6.3f} s  {mine:8.3f} s  {mine / low:4.2f}x  "
            f"(rotate_key min {min(ours):.3f} s, max {max(ours):.3f} s; {size / mine:,.0f} tokens/s)"
        )


async def timed(operation: Callable[[], Awaitable[object]], iterations: int) -> list[float]:
    for _ in range(min(200, iterations)):  # warm the pool and psycopg's prepared statements
        await operation()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        await operation()
        samples.append(time.perf_counter() - started)
    return samples


_FLOOR_SQL = """
WITH token AS (
    SELECT key_id, nonce, ciphertext FROM tokens WHERE service_id = %(service)s AND key = %(key)s
), audit AS (
    INSERT INTO audit_log (at, service_id, action, token_key, user_email, result)
    SELECT now(), %(service)s, 'get_token', %(key)s, %(user)s, 'success' FROM token
)
SELECT key_id, nonce, ciphertext FROM token
"""


def get_token_floor(database: Database, keyring: Keyring, iterations: int) -> list[float]:
    """One plain psycopg statement per hand-out (read + chained audit insert, autocommit) plus the
    decryption: no thread hop, no SQLAlchemy, no fallback key, no rollback on a bad row."""
    url = database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    parameters = {"service": "bench", "key": "default", "user": "caller@example.com"}
    samples: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(min(200, iterations) + iterations):
            started = time.perf_counter()
            row = conn.execute(_FLOOR_SQL, parameters, prepare=True).fetchone()
            assert row is not None
            keyring.decrypt("bench", "default", Envelope(row[0], bytes(row[1]), bytes(row[2])))
            samples.append(time.perf_counter() - started)
    return samples[min(200, iterations) :]


async def bench_get_token(database: Database, iterations: int, concurrency: int) -> None:
    """The hand-out as the server makes it (``TokenService.resolve``: the caller's token, else the
    shared one, audited), unkeyed and with MCP_AUDIT_KEY, against the one-statement floor; then
    ``concurrency`` callers at once."""
    keyring = Keyring(parse_key(generate_key(), name="k"))
    audit_key = parse_key(generate_key(), name="audit")
    store = DatabaseTokenStore(database, keyring, actor="bench@example.com")
    await store.set("bench", "default", "token-" + secrets.token_hex(20))
    caller = Identity(subject="caller@example.com", method="bearer")
    unkeyed = TokenService(store, DatabaseAuditSink(database), service="bench", operator="bench@example.com")

    async def hand_out() -> None:
        assert await unkeyed.resolve(caller, "bench_tool") is not None

    floor = statistics.median(get_token_floor(database, keyring, iterations))
    ours = await timed(hand_out, iterations)
    print(f"get_token, {iterations} sequential hand-outs (read + decrypt + committed chained audit row)")
    print(f"  floor (one psycopg statement + decrypt): p50 {floor * 1000:6.3f} ms")
    print(
        f"  TokenService.resolve, unkeyed chain    : {percentiles(ours)}  ratio {statistics.median(ours) / floor:.2f}x"
    )
    per_task = max(1, iterations // concurrency)
    samples: list[float] = []

    async def worker() -> None:
        samples.extend(await timed(hand_out, per_task))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    total = (per_task + min(200, per_task)) * concurrency
    print(f"  {concurrency} concurrent callers, unkeyed     : {percentiles(samples)}  ({total / elapsed:,.0f} calls/s)")
    # Keyed last: once a keyed row is written, the chain refuses unkeyed writers.
    keyed_store = DatabaseTokenStore(database, keyring, actor="bench@example.com", audit_key=audit_key)
    keyed = TokenService(
        keyed_store, DatabaseAuditSink(database, audit_key), service="bench", operator="bench@example.com"
    )

    async def keyed_hand_out() -> None:
        assert await keyed.resolve(caller, "bench_tool") is not None

    mine = await timed(keyed_hand_out, iterations)
    print(
        f"  TokenService.resolve, MCP_AUDIT_KEY    : {percentiles(mine)}  ratio {statistics.median(mine) / floor:.2f}x"
    )


async def bench_import(database: Database, count: int, repeats: int) -> None:
    """``tokens import`` of ``count`` new tokens (one transaction, an audit row each): median of
    ``repeats``, each into an emptied table. The target is absolute (10k in <= 1 s): there is no
    floor to compare with but the 10,000 separate ``set_token`` calls it replaces."""
    store = DatabaseTokenStore(database, Keyring(parse_key(generate_key(), name="k")), actor="bench@example.com")
    rows = [("bench", f"user{index}@example.com", "token-" + secrets.token_hex(20)) for index in range(count)]
    samples = []
    for _ in range(repeats):
        with database.engine.begin() as conn:
            conn.execute(text("TRUNCATE tokens RESTART IDENTITY"))
        started = time.perf_counter()
        assert await store.import_many(rows) == count
        samples.append(time.perf_counter() - started)
    print(f"tokens import, one transaction, median of {repeats}")
    median = statistics.median(samples)
    print(f"  {count:>7} tokens: {median:.3f} s ({count / median:,.0f} tokens/s)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="rotations per size (the median is printed)")
    args = parser.parse_args()
    raw = (
        os.environ.get("BENCH_DATABASE_URL")
        or os.environ.get("TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    admin_url = normalize_url(raw)
    name = f"mcp_auth_bench_{secrets.token_hex(4)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    database = Database.from_url(admin_url.set(database=name).render_as_string(hide_password=False), slug="bench")
    try:
        migrations.upgrade(database)
        with database.engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar_one()
            sync = conn.execute(text("SHOW synchronous_commit")).scalar_one()
        print(f"PostgreSQL {version} (synchronous_commit={sync}); load average {os.getloadavg()[0]:.2f}")
        sizes = [int(size) for size in args.sizes.split(",") if size]
        await bench_rotation(database, sizes, args.repeats)
        if sizes:
            await bench_import(database, sizes[0], args.repeats)
        with database.engine.begin() as conn:
            conn.execute(text("TRUNCATE tokens RESTART IDENTITY"))
        if args.iterations > 0:  # --iterations 0: rotation only
            await bench_get_token(database, args.iterations, args.concurrency)
    finally:
        database.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
