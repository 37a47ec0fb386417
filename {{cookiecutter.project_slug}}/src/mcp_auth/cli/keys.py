"""``keys create|list|revoke``: API keys callers present as ``Authorization: Bearer mcpk_...``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from mcp_auth.cli.running import call, open_database
from mcp_auth.cli.state import fail
from mcp_auth.cli.tables import print_table, when
from mcp_auth.db.keys import ApiKeyStore, valid_email, validate_scopes

# A key without scopes may call every tool: "-" or an empty cell would read as "none". The space
# keeps it from being mistaken for a scope (scope tokens have none).
UNRESTRICTED = "(all tools)"

app = typer.Typer(no_args_is_help=True, help="API keys callers present as bearer tokens: create, list, revoke.")


@app.command()
def create(
    ctx: typer.Context,
    email: Annotated[str, typer.Option("--email", help="Owner of the key: the caller identity it maps to.")],
    expires_in_days: Annotated[
        int | None, typer.Option("--expires-in-days", min=1, help="Expire the key after this many days.")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            metavar="SCOPE",
            help="Limit the key to the tools this scope allows (repeatable). Without any: every tool.",
        ),
    ] = None,
) -> None:
    """Create a key for EMAIL. stdout: the key (shown once); stderr: its id."""
    email = email.strip()
    if not valid_email(email):
        fail(f"--email must be an email address, got {email!r}")
    try:  # checked before connecting: a bad scope creates nothing
        scopes = validate_scopes(scope or [])
    except ValueError as exc:
        fail(f"--scope: {exc}")
    expires_at = datetime.now(UTC) + timedelta(days=expires_in_days) if expires_in_days else None
    with open_database(ctx) as (_, database):
        created = call(lambda: ApiKeyStore(database).create(email, expires_at=expires_at, scopes=scopes))
    typer.echo(created.key)
    suffix = f", scopes {_scopes(created.scopes)}" if created.scopes else ""
    suffix += f", expires {when(expires_at)} UTC" if expires_at else ""
    typer.echo(f"API key id {created.id} for {email}{suffix} (the key is shown only once)", err=True)


def _scopes(scopes: frozenset[str]) -> str:
    return " ".join(sorted(scopes)) if scopes else UNRESTRICTED


@app.command("list")
def list_keys(ctx: typer.Context) -> None:
    """Every key: id, prefix, email, scopes, created, last used, expires, revoked (never the keys)."""
    with open_database(ctx) as (_, database):
        keys = call(ApiKeyStore(database).list)
    if not keys:
        typer.echo("no API keys", err=True)
        return
    print_table(
        ["ID", "PREFIX", "EMAIL", "SCOPES", "CREATED", "LAST USED", "EXPIRES", "REVOKED"],
        [
            [
                k.id,
                k.prefix + "…",
                k.email,
                _scopes(k.scopes),
                when(k.created_at),
                when(k.last_used_at),
                when(k.expires_at),
                when(k.revoked_at),
            ]
            for k in keys
        ],
    )


@app.command()
def revoke(ctx: typer.Context, key_id: Annotated[int, typer.Argument(metavar="ID", help="From 'keys list'.")]) -> None:
    """Revoke a key; callers using it get 401 from their next request."""
    with open_database(ctx) as (_, database):
        found = call(lambda: ApiKeyStore(database).revoke(key_id))
    if not found:
        fail(f"no API key with id {key_id}")
    typer.echo(f"revoked API key {key_id}")
