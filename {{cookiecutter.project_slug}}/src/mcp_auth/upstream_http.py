"""The one HTTP client per server process that tools use to call upstream APIs.

Building an ``httpx.AsyncClient`` costs ~50 ms of CPU (TLS context, CA bundle), so a client per
call caps a server at a few dozen upstream calls a second; one pooled client, opened with the
app's lifespan and closed with it, reuses connections too. Tools read it as
``mcp_auth.current().http``, next to the caller and the upstream token.
"""

from __future__ import annotations

import httpx

TIMEOUT = httpx.Timeout(10.0, connect=3.0)
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=30.0)


class UpstreamHttp:
    """Holds the process's client between ``open`` and ``close`` (the app's lifespan)."""

    def __init__(self) -> None:
        self.client: httpx.AsyncClient | None = None

    def open(self) -> httpx.AsyncClient:
        if self.client is None:
            # No redirects: a redirect could carry the service token to another host.
            self.client = httpx.AsyncClient(timeout=TIMEOUT, limits=LIMITS, follow_redirects=False)
        return self.client

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()
