"""The project's console script: ``serve``, ``dev``, ``keygen`` and the operator commands.

A project builds it with ``build_cli(PROJECT, "my_pkg.app:create_app")``; everything else is
template-owned. The app factory is imported only by ``serve`` and ``dev`` (``cli/dev.py``, which
also uses ``create_mcp()`` from the factory's module): FastMCP takes seconds to import, and
operator commands (and a refused start) should not wait for it.
Exit codes: 0 ok, 1 user error (one line on stderr, no traceback), 2 usage.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, cast

import typer
import typer.main
from mcp_auth.cli.state import CliState, fail, state
from mcp_auth.config import McpAuthSettings, ProjectInfo
from mcp_auth.crypto import generate_key
from mcp_auth.errors import McpAuthError
from mcp_auth.logs import configure_logging
from mcp_auth.ownership import require_own_copy
from mcp_auth.token_functions import configure
from typer.core import TyperGroup

SUBCOMMANDS = {
    "tokens": "Upstream tokens in the database: set, get, delete, list, import, rotate-key, import-env.",
    "keys": "API keys callers present as bearer tokens: create, list, revoke.",
    "audit": "The audit log: list, verify, checkpoint.",
    "db": "Database schema: upgrade.",
}
COMMANDS = {"dev": "Development server, NO authentication, loopback only: stdio (default) or --http."}
"""Single commands that live in their own module (``mcp_auth.cli.<name>.<name>``), imported when invoked."""


def load_factory(path: str) -> Callable[[McpAuthSettings], object]:
    module, _, attribute = path.partition(":")
    return cast(Callable[[McpAuthSettings], object], getattr(importlib.import_module(module), attribute))


def build_cli(project: ProjectInfo, app_factory: str) -> typer.Typer:
    cli = typer.Typer(
        name=project.slug,
        help=f"{project.slug}: authenticated MCP server for {project.service_name}.",
        cls=_LazySubcommands,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    @cli.callback()
    def root(ctx: typer.Context) -> None:
        # Operator commands: only the one-line error reaches stderr (exit 1), so Python's
        # last-resort handler must not print driver warnings; `serve` switches to JSON logs.
        root_logger = logging.getLogger()
        if not root_logger.handlers:
            root_logger.addHandler(logging.NullHandler())
        try:
            require_own_copy(project.package)
        except McpAuthError as exc:
            fail(exc.message)
        configure(project)  # mcp_auth.get_token() & co. in this process use this project's names
        ctx.obj = CliState(project=project, app_factory=app_factory)

    cli.command()(serve)
    cli.command()(keygen)
    return cli


class _LazySubcommands(TyperGroup):
    """The operator command groups, each imported only when it is invoked (or help lists it):
    they load SQLAlchemy, which ``serve`` with the env store never needs."""

    # ``ctx`` and the command are click's types, which newer Typer versions vendor privately
    # (typer._click): Any keeps this independent of where they come from.
    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *COMMANDS, *SUBCOMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name in COMMANDS:
            single = typer.Typer(add_completion=False)
            function = getattr(importlib.import_module(f"mcp_auth.cli.{cmd_name}"), cmd_name)
            single.command(help=COMMANDS[cmd_name])(function)
            command = typer.main.get_command(single)  # one command and no callback: the command itself
            command.name = cmd_name
            return command
        if cmd_name not in SUBCOMMANDS:
            return super().get_command(ctx, cmd_name)
        module = importlib.import_module(f"mcp_auth.cli.{cmd_name}")
        command = typer.main.get_group(module.app)
        command.name, command.help = cmd_name, SUBCOMMANDS[cmd_name]
        return command


def serve(ctx: typer.Context) -> None:
    """Start the HTTP server (MCP_HOST / MCP_PORT)."""
    import uvicorn

    cli_state = state(ctx)
    settings = cli_state.settings()
    configure_logging()
    try:
        settings.validate_startup()  # before the slow import: a refused start is instant
        app = load_factory(cli_state.app_factory)(settings)
    except McpAuthError as exc:
        fail(exc.message)
    configure_logging()  # again: importing FastMCP installs its own (non-JSON) handlers
    uvicorn.run(
        app,  # type: ignore[arg-type]
        host=settings.host,
        port=settings.port or cli_state.project.default_port,
        log_config=None,
        proxy_headers=True,
        server_header=False,
    )


def keygen() -> None:
    """Print a new MCP_AUTH_ENCRYPTION_KEY (base64 of 32 random bytes)."""
    typer.echo(generate_key())
