"""``audit list|verify``: read the audit log and check its hash chain."""

from __future__ import annotations

from typing import Annotated

import typer
from mcp_auth.cli.running import call, open_database
from mcp_auth.cli.state import fail
from mcp_auth.cli.tables import print_table, when
from mcp_auth.db.audit_log import list_events, verify_chain

app = typer.Typer(no_args_is_help=True, help="The audit log: list, verify.")


@app.command("list")
def list_rows(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many of the newest rows.")] = 50,
    service: Annotated[str | None, typer.Option("--service", help="Only this service.")] = None,
) -> None:
    """The newest rows, oldest first (times in UTC)."""
    with open_database(ctx) as (_, database):
        rows = call(lambda: list_events(database, limit=limit, service=service))
    if not rows:
        typer.echo("the audit log is empty", err=True)
        return
    print_table(
        ["ID", "AT", "SERVICE", "ACTION", "KEY", "USER", "RESULT", "DETAIL"],
        [
            [
                r.id,
                when(r.at),
                r.service_id,
                r.action,
                r.token_key or "-",
                r.user_email,
                r.result,
                r.detail or "",
            ]
            for r in rows
        ],
    )


@app.command()
def verify(ctx: typer.Context) -> None:
    """Exit 0 when the hash chain is intact, 1 naming the first row that was changed or removed."""
    with open_database(ctx) as (_, database):
        check = call(lambda: verify_chain(database))
    if not check.ok:
        fail(
            f"audit chain broken at row {check.first_broken_id}: "
            "that row, or the one before it, was modified or deleted"
        )
    typer.echo("audit chain intact")
