"""The project's console script: ``serve``, ``keygen`` and the operator commands.

A project builds it with ``build_cli(PROJECT, "my_pkg.app:create_app")``; everything else is
template-owned. The app factory is imported only by ``serve``: FastMCP takes seconds to import,
and operator commands (and a refused start) should not wait for it.
Exit codes: 0 ok, 1 user error (one line on stderr, no traceback), 2 usage.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import cast

import typer
from mcp_auth.cli.state import CliState, fail, state
from mcp_auth.config import McpAuthSettings, ProjectInfo
from mcp_auth.errors import McpAuthError
from mcp_auth.logs import configure_logging

SUBCOMMANDS = {
    "tokens": "Upstream tokens in the database: set, get, delete, list, rotate-key, import-env.",
    "keys": "API keys callers present as bearer tokens: create, list, revoke.",
    "audit": "The audit log: list, verify.",
    "db": "Database schema: upgrade.",
}


def load_factory(path: str) -> Callable[[McpAuthSettings], object]:
    module, _, attribute = path.partition(":")
    return cast(Callable[[McpAuthSettings], object], getattr(importlib.import_module(module), attribute))


def build_cli(project: ProjectInfo, app_factory: str) -> typer.Typer:
    cli = typer.Typer(
        name=project.slug,
        help=f"{project.slug}: authenticated MCP server for {project.service_name}.",
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
        ctx.obj = CliState(project=project, app_factory=app_factory)

    @cli.command()
    def serve(ctx: typer.Context) -> None:
        """Start the HTTP server (MCP_HOST / MCP_PORT)."""
        import uvicorn

        settings = state(ctx).settings()
        configure_logging()
        try:
            settings.validate_startup()  # before the slow import: a refused start is instant
            app = load_factory(app_factory)(settings)
        except McpAuthError as exc:
            fail(exc.message)
        configure_logging()  # again: importing FastMCP installs its own (non-JSON) handlers
        uvicorn.run(
            app,  # type: ignore[arg-type]
            host=settings.host,
            port=settings.port or project.default_port,
            log_config=None,
            proxy_headers=True,
            server_header=False,
        )

    @cli.command()
    def keygen() -> None:
        """Print a new MCP_AUTH_ENCRYPTION_KEY (base64 of 32 random bytes)."""
        from mcp_auth.crypto import generate_key

        typer.echo(generate_key())

    for name, help_text in SUBCOMMANDS.items():
        module = importlib.import_module(f"mcp_auth.cli.{name}")
        cli.add_typer(module.app, name=name, help=help_text)
    return cli
