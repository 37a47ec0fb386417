"""Example tool: who the server thinks you are. Returns no secrets."""

import mcp_auth
from fastmcp import FastMCP


def whoami() -> dict[str, str | None]:
    """Return the authenticated caller's identity and how they authenticated."""
    return mcp_auth.current().identity.as_dict()


def register(mcp: FastMCP) -> None:
    mcp.tool(whoami)
