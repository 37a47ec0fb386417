"""A small demo server for mcp_auth's HTTP tests: tools that read the call context."""

from __future__ import annotations

from typing import Any

import mcp_auth
from fastmcp import FastMCP
from fastmcp.server.auth import require_scopes
from fastmcp.server.dependencies import get_access_token
from mcp_auth.asgi.app import build_http_app
from mcp_auth.runtime import Runtime
from mcp_auth.testing.settings import DEMO_BEARER, make_settings
from mcp_auth.tool_policies import NEEDS_UPSTREAM_TOKEN
from starlette.applications import Starlette

DEMO_SCOPE = "demo:read"
"""The scope ``token_suffix`` requires (callers whose credential carries scopes need it)."""
DEMO_TOKEN = "upstream-secret-token-value-42"
"""The upstream token of ``demo_app`` (env store); ``token_suffix`` returns ``default:42``."""


def demo_mcp() -> FastMCP:
    """``whoami`` (the caller), ``access_token`` (the caller as FastMCP sees it) and
    ``token_suffix`` (needs the upstream token and DEMO_SCOPE: which key answered, the token's
    last two characters)."""
    mcp = FastMCP("demo")

    @mcp.tool
    def whoami() -> dict[str, str | None]:
        return mcp_auth.current().identity.as_dict()

    @mcp.tool
    def access_token() -> dict[str, Any]:
        token = get_access_token()
        assert token is not None
        return {"client_id": token.client_id, "scopes": token.scopes, "expires_at": token.expires_at}

    @mcp.tool(tags={NEEDS_UPSTREAM_TOKEN}, auth=require_scopes(DEMO_SCOPE))
    def token_suffix() -> str:
        ctx = mcp_auth.current()
        return f"{ctx.token_key}:{ctx.service_token[-2:]}"

    return mcp


def demo_app(**env: str) -> Starlette:
    """``demo_mcp`` behind the authenticated HTTP app: bearer mode (``ci-bot`` holds DEMO_BEARER),
    the env store holding DEMO_TOKEN; ``env`` overrides either."""
    base = {"MCP_AUTH_MODE": "bearer", "MCP_BEARER_TOKENS": f"ci-bot={DEMO_BEARER}", "DEMO_API_TOKEN": DEMO_TOKEN}
    return build_http_app(demo_mcp(), Runtime.from_settings(make_settings(**{**base, **env})))
