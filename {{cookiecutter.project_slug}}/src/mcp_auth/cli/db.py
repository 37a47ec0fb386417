"""``db upgrade``: create or update mcp_auth's tables to the latest migration."""

from __future__ import annotations

import typer
from mcp_auth.cli.running import open_database
from mcp_auth.cli.state import fail
from mcp_auth.db import migrations
from mcp_auth.errors import McpAuthError

app = typer.Typer(no_args_is_help=True, help="Database schema: upgrade.")


@app.command()
def upgrade(ctx: typer.Context) -> None:
    """Create or update mcp_auth's tables (tokens, audit_log, api_keys) to the latest revision."""
    with open_database(ctx, require_schema=False) as (_, database):
        try:
            revisions = migrations.upgrade(database)
        except McpAuthError as exc:
            fail(exc.message)
    typer.echo(f"database schema at revision {', '.join(sorted(revisions))} (head)")
