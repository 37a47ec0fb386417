"""Benchmark the PostgreSQL token vault (not a test; run it by hand or in a perf job).

    uv run python benchmarks/bench_vault.py [--iterations 3000] [--sizes 10000,100000]

Uses BENCH_DATABASE_URL, else TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres.
Creates a scratch database next to it, migrates it, and drops it at the end. Prints:
- key rotation (``rotate_key``: DELETE ... RETURNING + decrypt/re-encrypt + COPY, one transaction)
  for each size;
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

from mcp_auth.audit import AuditEvent
from mcp_auth.crypto import Keyring, generate_key, parse_key
from mcp_auth.db import Database, migrations, normalize_url
from mcp_auth.db.audit_log import DatabaseAuditSink
from mcp_auth.stores.database import DatabaseTokenStore
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return (
        f"p50 {pick(0.50):6.3f} ms  p90 {pick(0.90):6.3f} ms  p99 {pick(0.99):6.3f} ms  "
        f"mean {statistics.fmean(ordered) * 1000:6.3f} ms"
    )


def fill(database: Database, keyring: Keyring, count: int) -> None:
    """``count`` tokens under the keyring's current key, loaded with COPY (setup, not measured)."""
    with database.engine.begin() as conn:
        conn.execute(text("TRUNCATE tokens RESTART IDENTITY"))
        driver = conn.connection.driver_connection
        assert driver is not None
        with (
            driver.cursor() as cursor,
            cursor.copy("COPY tokens (service_id, key, ciphertext, nonce, key_id) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(["text", "text", "bytea", "bytea", "text"])
            for i in range(count):
                envelope = keyring.encrypt("bench", f"user{i}@example.com", f"token-{i}-{secrets.token_hex(16)}")
                copy.write_row(("bench", f"user{i}@example.com", envelope.ciphertext, envelope.nonce, envelope.key_id))


async def bench_rotation(database: Database, sizes: list[int]) -> None:
    print("key rotation (rotate_key, one transaction)")
    for size in sizes:
        old, new = generate_key(), generate_key()
        store = DatabaseTokenStore(database, Keyring(parse_key(old, name="old")), actor="bench@example.com")
        fill(database, store.keyring, size)
        started = time.perf_counter()
        count = await store.rotate_key(old, new)
        elapsed = time.perf_counter() - started
        assert count == size
        print(f"  {size:>7} tokens: {elapsed:6.2f} s  ({size / elapsed:,.0f} tokens/s)")


async def timed(operation: Callable[[], Awaitable[object]], iterations: int) -> list[float]:
    for _ in range(min(200, iterations)):  # warm the pool and psycopg's prepared statements
        await operation()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        await operation()
        samples.append(time.perf_counter() - started)
    return samples


async def bench_get_token(database: Database, iterations: int, concurrency: int) -> None:
    store = DatabaseTokenStore(database, Keyring(parse_key(generate_key(), name="k")), actor="bench@example.com")
    await store.set("bench", "default", "token-" + secrets.token_hex(20))
    sink = DatabaseAuditSink(database)

    async def server_path() -> None:  # what TokenService does for other stores: store.get, then the audit sink
        value = await store.get("bench", "default")
        await sink.record(AuditEvent("get_token", "bench", "default", "caller@example.com", "success"))
        assert value is not None

    async def single_hop() -> None:
        assert await store.get_audited("bench", "default", "caller@example.com") is not None

    async def read_only() -> None:
        assert await store.get("bench", "default") is not None

    print(f"get_token latency, {iterations} sequential calls (read + decrypt + audit insert, committed)")
    print(f"  store.get + audit sink : {percentiles(await timed(server_path, iterations))}")
    print(f"  store.get_audited      : {percentiles(await timed(single_hop, iterations))}")
    print(f"  store.get (no audit)   : {percentiles(await timed(read_only, iterations))}")

    per_task = max(1, iterations // concurrency)
    samples: list[float] = []

    async def worker() -> None:
        samples.extend(await timed(server_path, per_task))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    total = per_task * concurrency + min(200, per_task) * concurrency
    print(f"  {concurrency} concurrent callers   : {percentiles(samples)}  ({total / elapsed:,.0f} calls/s)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--concurrency", type=int, default=8)
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
        await bench_rotation(database, [int(size) for size in args.sizes.split(",") if size])
        with database.engine.begin() as conn:
            conn.execute(text("TRUNCATE tokens RESTART IDENTITY"))
        await bench_get_token(database, args.iterations, args.concurrency)
    finally:
        database.close()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    asyncio.run(main())
