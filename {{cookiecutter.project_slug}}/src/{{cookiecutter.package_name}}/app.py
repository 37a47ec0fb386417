"""Build the FastMCP server and its authenticated HTTP app."""

from __future__ import annotations

from fastmcp import FastMCP
from mcp_auth.config import McpAuthSettings, load_settings
from mcp_auth.runtime import Runtime
from mcp_auth.server import build_http_app
from starlette.applications import Starlette

from {{ cookiecutter.package_name }}.project import PROJECT, PROJECT_NAME
from {{ cookiecutter.package_name }}.tools import register_tools


def create_mcp() -> FastMCP:
    mcp = FastMCP(PROJECT_NAME, instructions="{{ cookiecutter.description }}")
    register_tools(mcp)
    return mcp


def create_app(settings: McpAuthSettings | None = None) -> Starlette:
    """The ASGI app; raises ConfigError when authentication could not work."""
    runtime = Runtime.from_settings(settings or load_settings(PROJECT))
    return build_http_app(create_mcp(), runtime)
