"""Your tools live here. Each module exposes ``register(mcp)``; add yours to TOOL_MODULES.

The middleware has already authenticated the caller; read it with ``mcp_auth.current()``. A tool
that calls the upstream API declares it with ``tags={mcp_auth.NEEDS_UPSTREAM_TOKEN}``: only its
calls resolve (and audit) the upstream token, read with ``mcp_auth.current().service_token``.
Required scopes use FastMCP's own ``auth=require_scopes(...)`` (see tools/upstream.py). Raise
``ToolError`` for messages meant for the caller; other exceptions reach it masked.
"""

from fastmcp import FastMCP

from . import upstream, whoami

TOOL_MODULES = [whoami, upstream]


def register_tools(mcp: FastMCP) -> None:
    for module in TOOL_MODULES:
        module.register(mcp)
