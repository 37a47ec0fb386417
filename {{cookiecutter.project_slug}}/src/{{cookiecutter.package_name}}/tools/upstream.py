"""Example tool: call the upstream API with the service token.

The caller authenticated to *us*; the upstream sees only the service token resolved for this call
(the caller's own when one is stored under their identity, else the shared ``default``).
Copy this pattern: the server's one pooled client (``mcp_auth.current().http``, opened with the
app), never a client per call (building one costs ~50 ms of CPU).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote

import httpx
import mcp_auth
from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.server.auth import require_scopes

from ..project import PROJECT, UPSTREAM_BASE_URL

MAX_BODY_CHARS = 20_000


def base_url() -> str:
    # UPSTREAM_BASE_URL lets tests and staging point the tool at another host.
    return os.environ.get("UPSTREAM_BASE_URL", UPSTREAM_BASE_URL).rstrip("/")


def upstream_url(path: str) -> httpx.URL:
    """The URL of ``path`` under the base URL; a ToolError for anything that could leave it (the
    service token goes with the request, so it must never reach another host or API path)."""
    if not path.startswith("/") or path.startswith("//") or "://" in path or "\\" in path:
        raise ToolError("path must be a path on the upstream API, starting with a single '/'")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in path):
        raise ToolError("path must not contain control characters")
    route = path.split("?", 1)[0].split("#", 1)[0]
    decoded = route
    for _ in range(3):  # double- and triple-encoded dot segments too
        decoded = unquote(decoded)
    if "\\" in decoded or any(segment in (".", "..") for segment in decoded.split("/")):
        raise ToolError("path must not contain '.' or '..' segments (plain or percent-encoded)")
    base = httpx.URL(base_url() + "/")
    url = httpx.URL(base_url() + path)
    same_origin = (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port)
    if not same_origin or not url.raw_path.startswith(base.raw_path):
        raise ToolError("path leaves the upstream API's base URL")
    return url


async def upstream_get(path: str) -> Any:
    """GET a path of the upstream API (e.g. "/whoami") and return its JSON."""
    url = upstream_url(path)
    call = mcp_auth.current()
    headers = {"Authorization": f"Bearer {call.service_token}", "Accept": "application/json"}
    try:
        response = await call.http.get(url, headers=headers)
    except httpx.TimeoutException:
        raise ToolError(f"upstream API timed out ({base_url()})") from None
    except httpx.HTTPError as exc:
        raise ToolError(f"upstream API unreachable ({base_url()}): {type(exc).__name__}") from None
    if response.status_code in (401, 403):
        raise ToolError(
            f"upstream API rejected the service token (HTTP {response.status_code}); "
            f"check the stored {PROJECT.service_name} token"
        )
    if response.status_code >= 400:
        raise ToolError(f"upstream API error: HTTP {response.status_code} for {path}")
    try:
        return response.json()
    except ValueError:
        return {"text": response.text[:MAX_BODY_CHARS]}


SCOPE = "upstream:read"
"""Callers whose credential carries scopes need this one to call the tool."""


def register(mcp: FastMCP) -> None:
    description = f"GET a path of the {PROJECT.service_name} API (e.g. /whoami) and return its JSON."
    # auth: FastMCP's scope check (credentials without scopes may call every tool);
    # the tag: resolve (and audit) the upstream token for this tool's calls.
    mcp.tool(upstream_get, description=description, auth=require_scopes(SCOPE), tags={mcp_auth.NEEDS_UPSTREAM_TOKEN})
