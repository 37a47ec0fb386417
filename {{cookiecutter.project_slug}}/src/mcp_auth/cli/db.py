"""``db upgrade``, plus what every database-backed command shares: opening the database,
running one async operation, and printing tables.

Every mcp_auth error becomes exit 1 with its one-line message (``fail``); nothing here prints a
token, a key or the DSN.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar

import anyio
import typer
from mcp_auth.cli.state import fail, state
from mcp_auth.config import McpAuthSettings
from mcp_auth.db import Database
from mcp_auth.errors import McpAuthError

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, help="Database schema: upgrade.")


@contextmanager
def open_database(ctx: typer.Context, *, require_schema: bool = True) -> Iterator[tuple[McpAuthSettings, Database]]:
    """The settings and an open Database; closed on exit. Exit 1 when it cannot be used."""
    settings = state(ctx).settings()
    if settings.database_url is None:
        fail("DATABASE_URL is not set (e.g. postgresql://user:password@host:5432/db or sqlite:///mcp.db)")
    try:
        database = Database.from_settings(settings)
    except McpAuthError as exc:
        fail(exc.message)
    try:
        if require_schema:
            try:
                database.require_schema()
            except McpAuthError as exc:
                fail(exc.message)
        yield settings, database
    finally:
        database.close()


def call(operation: Callable[[], Awaitable[T]]) -> T:
    """Run one async operation to completion; an mcp_auth error exits 1 with its message."""
    try:
        return anyio.run(operation)
    except McpAuthError as exc:
        fail(exc.message)


def when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(cell) for cell in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@app.command()
def upgrade(ctx: typer.Context) -> None:
    """Create or update mcp_auth's tables (tokens, audit_log, api_keys) to the latest revision."""
    from mcp_auth import migrations  # Alembic only loads for this command

    with open_database(ctx, require_schema=False) as (_, database):
        try:
            revisions = migrations.upgrade(database)
        except McpAuthError as exc:
            fail(exc.message)
    typer.echo(f"database schema at revision {', '.join(sorted(revisions))} (head)")
