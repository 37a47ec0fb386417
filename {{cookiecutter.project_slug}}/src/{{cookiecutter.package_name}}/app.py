"""Build the FastMCP server and its authenticated HTTP app."""

from __future__ import annotations

from fastmcp import FastMCP
from mcp_auth import McpAuthSettings, Runtime, build_http_app, load_settings
from starlette.applications import Starlette

from .project import DESCRIPTION, PROJECT, PROJECT_NAME
from .tools import register_tools


def create_mcp() -> FastMCP:
    # mask_error_details: an unexpected exception in a tool reaches the caller as a generic error
    # (its text may hold hosts or data); tools raise ToolError for what the caller should read.
    mcp = FastMCP(PROJECT_NAME, instructions=DESCRIPTION, mask_error_details=True)
    register_tools(mcp)
    return mcp


def create_app(settings: McpAuthSettings | None = None) -> Starlette:
    """The ASGI app; raises ConfigError when authentication could not work."""
    runtime = Runtime.from_settings(settings or load_settings(PROJECT))
    return build_http_app(create_mcp(), runtime)
