"""What every database-backed command shares: opening the database, and running one async
operation. Every mcp_auth error becomes exit 1 with its one-line message (``fail``); nothing
here prints a token, a key or the DSN."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import anyio
import typer
from mcp_auth.cli.state import fail, state
from mcp_auth.config import McpAuthSettings
from mcp_auth.db import Database
from mcp_auth.db import open_database as open_configured_database
from mcp_auth.db.migrations import require_schema as require_current_schema
from mcp_auth.errors import McpAuthError

T = TypeVar("T")


@contextmanager
def open_database(ctx: typer.Context, *, require_schema: bool = True) -> Iterator[tuple[McpAuthSettings, Database]]:
    """The settings and an open Database; closed on exit. Exit 1 when it cannot be used."""
    settings = state(ctx).settings()
    if settings.database_url is None:
        fail("DATABASE_URL is not set (e.g. postgresql://user:password@host:5432/db or sqlite:///mcp.db)")
    try:
        database = open_configured_database(settings)
    except McpAuthError as exc:
        fail(exc.message)
    try:
        if require_schema:
            try:
                require_current_schema(database)
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
