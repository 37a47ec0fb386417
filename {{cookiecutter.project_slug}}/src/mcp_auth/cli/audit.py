"""``audit list|verify|checkpoint``: read the audit log, check its hash chain, take checkpoints."""

from __future__ import annotations

from typing import Annotated

import typer
from mcp_auth.cli.running import call, open_database
from mcp_auth.cli.state import fail
from mcp_auth.cli.tables import print_table, when
from mcp_auth.db.audit_log import Checkpoint, chain_head, list_events, verify_chain

app = typer.Typer(no_args_is_help=True, help="The audit log: list, verify, checkpoint.")


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
        ["ID", "AT", "SERVICE", "ACTION", "KEY", "TOOL", "USER", "RESULT", "DETAIL"],
        [
            [
                r.id,
                when(r.at),
                r.service_id,
                r.action,
                r.token_key or "-",
                r.tool or "-",
                r.user_email,
                r.result,
                r.detail or "",
            ]
            for r in rows
        ],
    )


@app.command()
def verify(
    ctx: typer.Context,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            metavar="ID:HASH",
            help="A checkpoint taken earlier ('audit checkpoint', or the server's log): it must still be in the chain.",
        ),
    ] = None,
) -> None:
    """Exit 0 when the hash chain is intact, 1 naming the first row that was changed or removed."""
    expect = None
    if expect_head is not None:
        try:
            expect = Checkpoint.parse(expect_head)
        except ValueError as exc:
            fail(f"--expect-head: {exc}")
    with open_database(ctx) as (settings, database):
        key = settings.audit_key_bytes()
        check = call(lambda: verify_chain(database, key=key, expect=expect))
    if not check.ok:
        fail(f"audit chain broken at row {check.first_broken_id}: {check.problem}")
    if check.head is None:
        typer.echo("audit chain intact: the log is empty")
        return
    keyed = f"keyed with MCP_AUDIT_KEY from row {check.keyed_from}" if check.keyed_from else "not keyed"
    typer.echo(
        f"audit chain intact: {check.rows} rows checked (ids {check.first_id} to {check.head.id}), "
        f"{keyed}; head {check.head}"
    )


@app.command()
def checkpoint(ctx: typer.Context) -> None:
    """Print the chain head as ID:HASH; keep it elsewhere and pass it to 'verify --expect-head'."""
    with open_database(ctx) as (_, database):
        head = call(lambda: chain_head(database))
    if head is None:
        fail("the audit log is empty: there is no head to checkpoint yet")
    typer.echo(str(head))
