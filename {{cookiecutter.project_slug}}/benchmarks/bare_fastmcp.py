"""The floor of the HTTP benchmark: plain FastMCP with the same two tools and none of mcp_auth.

    BENCH_UPSTREAM_TOKEN=... python benchmarks/bare_fastmcp.py --port 8123 --upstream http://127.0.0.1:9000

Same transport configuration as the project's server (stateless streamable HTTP, JSON responses,
at /mcp) and the same tool work: ``whoami`` returns a three-key dict; ``upstream_get`` GETs a path
of the upstream with a bearer token over one pooled httpx client and returns its JSON. No
authentication, no caller context, no token store, no audit, no metrics. Served by ``uvicorn.run``
with its defaults (plain-text access log on stdout), as a FastMCP app is deployed without the
template. It imports neither mcp_auth nor the project, so its RSS is the floor's own.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastmcp import FastMCP
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

# The project's pooled upstream client uses these (mcp_auth.upstream_http): same pool, same timeouts.
TIMEOUT = httpx.Timeout(10.0, connect=3.0)
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0)
TOKEN_ENV = "BENCH_UPSTREAM_TOKEN"
"""The upstream token the floor sends (an environment variable: never on the command line)."""


def create_bare_app(upstream_url: str, upstream_token: str) -> Starlette:
    """The floor's ASGI app (its lifespan opens and closes the pooled upstream client)."""
    clients: list[httpx.AsyncClient] = []

    @asynccontextmanager
    async def lifespan(server: FastMCP) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=TIMEOUT, limits=LIMITS, follow_redirects=False) as client:
            clients.append(client)
            yield
            clients.clear()

    mcp = FastMCP("bare", lifespan=lifespan)
    base = upstream_url.rstrip("/")

    @mcp.tool
    def whoami() -> dict[str, str | None]:
        """Return a fixed identity (the floor authenticates nobody)."""
        return {"identity": "anonymous", "auth_method": None, "email": None}

    @mcp.tool
    async def upstream_get(path: str) -> Any:
        """GET a path of the upstream API and return its JSON."""
        headers = {"Authorization": f"Bearer {upstream_token}", "Accept": "application/json"}
        response = await clients[0].get(base + path, headers=headers)
        response.raise_for_status()
        return response.json()

    @mcp.custom_route("/health", methods=["GET"], include_in_schema=False)
    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return mcp.http_app(path="/mcp", stateless_http=True, json_response=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL of the upstream API")
    args = parser.parse_args()
    import uvicorn

    token = os.environ.get(TOKEN_ENV, "")
    uvicorn.run(create_bare_app(args.upstream, token), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
