"""``db upgrade``: create or update mcp_auth's tables (then the project's own) to the latest migration."""

from __future__ import annotations

import functools
from typing import Annotated

import typer
from mcp_auth.cli.running import open_database
from mcp_auth.cli.state import fail, state
from mcp_auth.db import project_migrations, roles
from mcp_auth.errors import McpAuthError

app = typer.Typer(no_args_is_help=True, help="Database schema: upgrade.")


@app.command()
def upgrade(
    ctx: typer.Context,
    runtime_role: Annotated[
        str | None,
        typer.Option(
            "--runtime-role",
            metavar="NAME",
            help="After migrating, grant the role the server connects as exactly what it needs "
            "(PostgreSQL; run as the owner of the tables).",
        ),
    ] = None,
) -> None:
    """Create or update mcp_auth's tables (tokens, audit_log, api_keys) to the latest revision,
    then the project's own (alembic/), in one transaction."""
    with open_database(ctx, require_schema=False) as (_, database):
        if runtime_role is not None and not database.is_postgres:
            fail("--runtime-role needs PostgreSQL")
        if runtime_role is not None and not runtime_role.strip():
            fail("--runtime-role needs a role name")
        environment = project_migrations.find_environment(state(ctx).project.package)
        grant = functools.partial(roles.grant_runtime_privileges, role=runtime_role) if runtime_role else None
        try:
            upgraded = project_migrations.upgrade_all(database, environment=environment, then=grant)
        except McpAuthError as exc:
            fail(exc.message)
    typer.echo(f"database schema at revision {', '.join(sorted(upgraded.mcp_auth))} (head)")
    if upgraded.project is not None:
        if upgraded.project:
            typer.echo(f"project schema at revision {', '.join(sorted(upgraded.project))} (head)")
        else:
            typer.echo("project schema: no migrations yet (alembic/versions/ is empty)")
    if runtime_role:
        typer.echo(f"runtime role {runtime_role}: {roles.describe_runtime_privileges()}")
