"""What every CLI command gets: the project's baked-in names and the settings, read lazily."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import NoReturn

import typer
from mcp_auth.config import McpAuthSettings, ProjectInfo, load_settings
from mcp_auth.errors import McpAuthError


@dataclass
class CliState:
    project: ProjectInfo
    app_factory: str  # "package.module:function", imported only by `serve`
    _settings: McpAuthSettings | None = field(default=None, repr=False)

    def settings(self) -> McpAuthSettings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.project)
            except McpAuthError as exc:
                fail(exc.message)
        return self._settings


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    assert isinstance(obj, CliState)
    return obj


def fail(message: str) -> NoReturn:
    """Exit 1 with exactly one line on stderr (the CLI's contract: no traceback)."""
    line = " ".join(str(message).split())
    sys.stderr.write(f"error: {line}\n")
    raise typer.Exit(1)
