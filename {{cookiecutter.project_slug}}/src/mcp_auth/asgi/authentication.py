"""ASGI step 1: authenticate every request except the public probes.

Shaped like Starlette's AuthenticationMiddleware: one backend (the Authenticator) decides, and
``on_error`` turns its failures into the contract's 401 / 503 JSON in one place. Our own rather
than FastMCP's RequireAuthMiddleware: the contract needs our 401 body and a 503 when the JWKS or
the API-key database cannot answer. The identity is bound for the rest of the request
(``mcp_auth.current()``).
"""

from __future__ import annotations

import logging

from mcp_auth.asgi.responses import send_unauthorized, send_unavailable
from mcp_auth.authenticator import Authenticator
from mcp_auth.context import CallContext, bind, unbind
from mcp_auth.errors import AuthenticationFailed, McpAuthError
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("mcp_auth.middleware")

PUBLIC_PATHS = frozenset({"/health", "/status"})


class AuthenticationMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        service: str,
        public_paths: frozenset[str] = PUBLIC_PATHS,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.service = service
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (scope["type"] == "http" and scope["path"] in self.public_paths):
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websocket routes exist; never let one in unauthenticated
            if scope["type"] == "websocket":
                await receive()  # websocket.connect: the ASGI order before a close
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            identity = await self.authenticator.authenticate(headers)
        except McpAuthError as exc:
            await self.on_error(scope, headers, exc, send)
            return
        token = bind(CallContext(identity=identity, service=self.service))
        try:
            await self.app(scope, receive, send)
        finally:
            unbind(token)

    async def on_error(self, scope: Scope, headers: dict[str, str], exc: McpAuthError, send: Send) -> None:
        client = scope.get("client")
        remote = client[0] if client else "unknown"
        if isinstance(exc, AuthenticationFailed):
            logger.warning(
                "authentication rejected",
                extra={"reason": exc.reason, "remote_addr": remote, "path": scope["path"]},
            )
            await send_unauthorized(send, exc.message, credential_sent="authorization" in headers)
            return
        logger.error("authentication unavailable", extra={"reason": exc.message, "remote_addr": remote})
        await send_unavailable(send, exc.message)
