"""Your tools live here. Each module exposes ``register(mcp)``; add yours to TOOL_MODULES.

The middleware has already authenticated the caller and, for tool calls, resolved the upstream
token: read both with ``mcp_auth.current()``.
"""

from fastmcp import FastMCP

from . import upstream, whoami

TOOL_MODULES = [whoami, upstream]


def register_tools(mcp: FastMCP) -> None:
    for module in TOOL_MODULES:
        module.register(mcp)
