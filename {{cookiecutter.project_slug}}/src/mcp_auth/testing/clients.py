"""Drive an app in-process: an httpx client and a real MCP client over ASGI (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2  # the MCP SDK's HTTP client library (httpx's successor), used by its transports
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from starlette.applications import Starlette

BASE = "http://testserver"


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and yield an httpx client bound to it."""
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
            yield client


def mcp_client(app: Starlette, headers: dict[str, str] | None = None) -> Client[Any]:
    """A FastMCP client speaking streamable HTTP to ``app`` (its lifespan must be running)."""

    def factory(
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
        **options: Any,  # the SDK also passes e.g. follow_redirects
    ) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app),
            base_url=BASE,
            headers=headers,
            timeout=timeout,
            auth=auth,
            **options,
        )

    transport = StreamableHttpTransport(f"{BASE}/mcp", headers=headers or {}, httpx_client_factory=factory)
    return Client(transport)


def jsonrpc(method: str, params: dict[str, Any] | None = None, id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": params or {}}


MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
