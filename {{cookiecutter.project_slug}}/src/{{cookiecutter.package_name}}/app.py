"""Build the FastMCP server and its authenticated HTTP app."""

from __future__ import annotations

from fastmcp import FastMCP
from mcp_auth import McpAuthSettings, Runtime, build_http_app, load_settings
from starlette.applications import Starlette

from .project import DESCRIPTION, PROJECT, PROJECT_NAME
from .tools import register_tools


def create_mcp() -> FastMCP:
    mcp = FastMCP(PROJECT_NAME, instructions=DESCRIPTION)
    register_tools(mcp)
    return mcp


def create_app(settings: McpAuthSettings | None = None) -> Starlette:
    """The ASGI app; raises ConfigError when authentication could not work."""
    runtime = Runtime.from_settings(settings or load_settings(PROJECT))
    return build_http_app(create_mcp(), runtime)
