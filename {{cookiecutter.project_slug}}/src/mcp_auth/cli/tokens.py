"""``tokens set|get|delete|list|rotate-key|import-env|import``: upstream tokens in the database store.

Values travel only through stdin/stdout, never argv (argv shows up in ``ps`` and shell history).
Writes and reads are audited as MCP_OPERATOR_EMAIL.
"""

from __future__ import annotations

import getpass
import hashlib
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated

import typer
from mcp_auth.cli.running import call, open_database
from mcp_auth.cli.state import fail, state
from mcp_auth.cli.tables import print_table, when
from mcp_auth.crypto import Keyring, parse_key
from mcp_auth.errors import McpAuthError, TokenNotFound
from mcp_auth.stores.base import DEFAULT_KEY
from mcp_auth.stores.database import DatabaseTokenStore
from mcp_auth.stores.database import list_tokens as stored_tokens
from mcp_auth.token_import import InvalidTokenRow, Row, name_problem, parse
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(
    no_args_is_help=True,
    help="Upstream tokens in the database: set, get, delete, list, rotate-key, import-env, import.",
)

Service = Annotated[str, typer.Argument(help="Upstream service id, e.g. the project's service name.")]
Key = Annotated[str, typer.Argument(help=f"Token key: a caller identity, or '{DEFAULT_KEY}' for the shared token.")]


@contextmanager
def open_store(ctx: typer.Context, keyring: Keyring | None = None) -> Iterator[DatabaseTokenStore]:
    """The database store acting as the operator; ``keyring`` overrides the env keys."""
    with open_database(ctx) as (settings, database):
        try:
            if keyring is None:
                store = DatabaseTokenStore.from_settings(settings, database, actor=settings.operator)
            else:
                store = DatabaseTokenStore(
                    database, keyring, actor=settings.operator, service_name=settings.service_name
                )
        except McpAuthError as exc:
            fail(exc.message)
        yield store


def _names(service: str, key: str) -> None:
    for label, value in (("SERVICE", service), ("KEY", key)):
        problem = name_problem(label, value)  # `tokens import` checks each row's names with it too
        if problem is not None:
            fail(problem)


def fingerprint(value: str) -> str:
    """Identifies a value for comparison without revealing it: 12 hex chars of its SHA-256."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:12]


def _read_value() -> str:
    stdin = sys.stdin
    if stdin.isatty():
        value = getpass.getpass("token value (input hidden): ")
    else:
        value = stdin.read()
    value = value.rstrip("\r\n")  # `echo token |` adds a newline the token does not have
    if not value:
        fail('no token value on stdin (pipe it in, e.g. printf %s "$TOKEN" | ... tokens set SERVICE KEY)')
    return value


@contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr when it is a terminal (logs get the summary line instead).

    The callback is safe to call from worker threads. On failure the bar is cleared, so the
    error stays the only line the command leaves on stderr.
    """
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        try:
            yield update
        except BaseException:
            progress.live.transient = True
            raise


@app.command("set")
def set_token(ctx: typer.Context, service: Service, key: Key) -> None:
    """Store a token read from stdin (encrypted with MCP_AUTH_ENCRYPTION_KEY)."""
    _names(service, key)
    value = _read_value()
    with open_store(ctx) as store:
        call(lambda: store.set(service, key, value))
        typer.echo(f"stored {service}/{key} (key id {store.keyring.current_id})")


@app.command("get")
def get_token(ctx: typer.Context, service: Service, key: Key) -> None:
    """Print a token on stdout (audited)."""
    with open_store(ctx) as store:
        value = call(lambda: store.get_audited(service, key))
    if value is None:
        fail(str(TokenNotFound(service, key)))
    typer.echo(value)


@app.command("delete")
def delete_token(ctx: typer.Context, service: Service, key: Key) -> None:
    """Delete a token."""
    with open_store(ctx) as store:
        deleted = call(lambda: store.delete(service, key))
    if not deleted:
        fail(str(TokenNotFound(service, key)))
    typer.echo(f"deleted {service}/{key}")


@app.command("list")
def list_tokens(
    ctx: typer.Context, service: Annotated[str | None, typer.Argument(help="Only this service.")] = None
) -> None:
    """Stored tokens: service, key, key id, last update (never values)."""
    with open_database(ctx) as (_, database):
        # Listing reads no ciphertext, so it works without the encryption key.
        tokens = call(lambda: stored_tokens(database, service))
    if not tokens:
        typer.echo("no tokens stored", err=True)
        return
    print_table(
        ["SERVICE", "KEY", "KEY ID", "UPDATED"],
        [[t.service, t.key, t.key_id, when(t.updated_at)] for t in tokens],
    )


@app.command("rotate-key")
def rotate_key(
    ctx: typer.Context,
    from_stdin: Annotated[
        bool,
        typer.Option("--stdin", help="Read two lines, the old key then the new key, and ignore the env keys."),
    ] = False,
) -> None:
    """Re-encrypt every token under MCP_AUTH_ENCRYPTION_KEY, reading rows written with any key in
    MCP_AUTH_PREVIOUS_KEYS (all or nothing)."""
    slug = state(ctx).project.slug
    old_key = new_key = ""
    keyring = None
    if from_stdin:
        lines = [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]
        if len(lines) != 2:
            fail("--stdin expects exactly two lines: the old key, then the new key")
        old_key, new_key = lines
        try:
            keyring = Keyring(parse_key(new_key, name="the new key (line 2)", slug=slug))
            parse_key(old_key, name="the old key (line 1)", slug=slug)
        except McpAuthError as exc:
            fail(exc.message)
    started = time.perf_counter()
    with open_store(ctx, keyring) as store, _progress("re-encrypting") as progress:
        if from_stdin:
            count = call(lambda: store.rotate_key(old_key, new_key, progress=progress))
        else:
            count = call(lambda: store.rotate_to_current(progress=progress))
        target = store.keyring.current_id
    elapsed = time.perf_counter() - started
    typer.echo(f"re-encrypted {count} tokens under key id {target} in {elapsed:.2f} s")


@app.command("import-env")
def import_env(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check everything, write nothing.")] = False,
) -> None:
    """Copy the env store's token into the database as <service_name>/default."""
    settings = state(ctx).settings()
    variable, service = settings.service_token_env, settings.service_name
    if settings.service_token is None:
        fail(f"{variable} is not set: there is no token to import")
    value = settings.service_token.get_secret_value()
    digest = fingerprint(value)
    started = time.perf_counter()
    with open_store(ctx) as store:
        existing = call(lambda: store.list(service))
        verb = "replace" if any(t.key == DEFAULT_KEY for t in existing) else "create"
        if dry_run:
            typer.echo(
                f"dry run: would {verb} {service}/{DEFAULT_KEY} from {variable} (sha256 {digest}); nothing written"
            )
            return
        with _progress("importing") as progress:
            progress(0, 1)
            call(lambda: store.import_token(service, DEFAULT_KEY, value))
            stored = call(lambda: store.get(service, DEFAULT_KEY))
            progress(1, 1)
    if stored is None or fingerprint(stored) != digest:
        fail(f"verification failed: {service}/{DEFAULT_KEY} does not read back as the imported value")
    elapsed = time.perf_counter() - started
    typer.echo(
        f"imported 1 token: {variable} -> {service}/{DEFAULT_KEY} ({verb}d) in {elapsed:.2f} s; "
        f"sha256 {digest} verified by reading it back"
    )
    typer.echo(f'check: printf %s "${variable}" | sha256sum | cut -c1-12   # should print {digest}', err=True)


class ImportFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


def _read_rows(input_format: ImportFormat | None) -> list[Row]:
    """The checked rows on stdin; exit 1 naming the first bad line (nothing is written then)."""
    stdin = sys.stdin
    if stdin.isatty():
        fail("pipe the tokens in on stdin, e.g. ... tokens import < tokens.jsonl (JSON lines or CSV)")
    data = stdin.buffer.read()
    try:
        text = data.decode("utf-8-sig")  # -sig: spreadsheets save CSV with a byte-order mark
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        fail(f"line {line}: not UTF-8 text")
    try:
        rows = parse(text, None if input_format is None else input_format.value)
    except InvalidTokenRow as exc:
        fail(str(exc))
    if not rows:
        fail('no tokens on stdin (JSON lines {"service": ..., "key": ..., "value": ...} or CSV service,key,value)')
    return rows


@app.command("import")
def import_tokens(
    ctx: typer.Context,
    input_format: Annotated[
        ImportFormat | None,
        typer.Option("--format", help="jsonl or csv (default: jsonl when the first non-blank line starts with '{')."),
    ] = None,
) -> None:
    """Store many tokens read from stdin in one transaction (all or nothing): JSON lines
    {"service": ..., "key": ..., "value": ...} or CSV service,key,value (header row optional).
    Existing tokens are replaced; each token gets a set_token audit row."""
    rows = _read_rows(input_format)
    started = time.perf_counter()
    with open_store(ctx) as store:
        count = call(lambda: store.import_many(rows))
        target = store.keyring.current_id
    elapsed = time.perf_counter() - started
    noun = "token" if count == 1 else "tokens"
    typer.echo(f"imported {count} {noun} (key id {target}) in {elapsed:.2f} s")
