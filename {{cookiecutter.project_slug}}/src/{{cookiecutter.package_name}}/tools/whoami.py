"""Example tool: who the server thinks you are. Returns no secrets."""

from fastmcp import FastMCP

import mcp_auth


def whoami() -> dict[str, str | None]:
    """Return the authenticated caller's identity and how they authenticated."""
    return mcp_auth.current().identity.as_dict()


def register(mcp: FastMCP) -> None:
    mcp.tool(whoami)
