"""ASGI step 2: for ``tools/call``, resolve the caller's upstream token (audited) before FastMCP
dispatches, so an unavailable store is a real HTTP 503 rather than a JSON-RPC error in a 200.

Runs after authentication: the identity is already bound (``mcp_auth.current()``). The token
is bound with it for the tool to read through the same accessor.
"""

from __future__ import annotations

import logging

from mcp_auth.asgi.request_body import read_body, replay, tool_call
from mcp_auth.asgi.responses import send_too_large, send_unavailable
from mcp_auth.context import CallContext, bind, current, unbind
from mcp_auth.errors import ServiceUnavailable
from mcp_auth.observability.metrics import ToolNames
from mcp_auth.tokens import TokenService
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("mcp_auth.middleware")


class TokenResolutionMiddleware:
    def __init__(
        self, app: ASGIApp, *, tokens: TokenService, public_paths: frozenset[str], tool_names: ToolNames | None = None
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.public_paths = public_paths
        self.tool_names = tool_names or ToolNames()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            await send_too_large(send)
            return
        receive = replay(body, receive)
        called = tool_call(body)
        if called is None:
            await self.app(scope, receive, send)
            return
        call = await self._resolve(send, called.name)
        if call is None:
            self.tool_names.record(called.name, "unavailable")
            return
        token = bind(call)
        try:
            await self.app(scope, receive, send)
        finally:
            unbind(token)

    async def _resolve(self, send: Send, tool: str | None) -> CallContext | None:
        """The call with its token bound; None when a 503 was sent instead."""
        identity = current().identity
        try:
            resolved = await self.tokens.resolve(identity, tool)
        except ServiceUnavailable as exc:
            logger.error("token store unavailable", extra={"reason": exc.log_detail, "identity": identity.subject})
            await send_unavailable(send, exc.message)
            return None
        if resolved is None:
            # The spec: 503 on tools/call until the token can be resolved (not a start-up error).
            message = (
                f"no {self.tokens.service} token is stored for {identity.subject!r} or 'default' "
                f"(store: {self.tokens.store.name})"
            )
            logger.error("no upstream token", extra={"reason": message, "identity": identity.subject})
            await send_unavailable(send, message)
            return None
        return CallContext(
            identity=identity, service=self.tokens.service, token_key=resolved.key, _token=resolved.value
        )
