"""ASGI step 3: for a call of a tool that declares it needs the upstream token
(``tags={NEEDS_UPSTREAM_TOKEN}``), resolve the caller's token (audited) before FastMCP
dispatches, so an unavailable store is a real HTTP 503 rather than a JSON-RPC error in a 200.

Runs after authentication and tool authorization: the identity is already bound
(``mcp_auth.current()``) and the tool is known to be dispatchable and allowed. The token is bound
with the identity for the tool to read through the same accessor. Every other request, and
every other tool, never touches the token store.
"""

from __future__ import annotations

import dataclasses
import logging

from mcp_auth.asgi.responses import send_unavailable
from mcp_auth.asgi.tool_authorization import called_tool
from mcp_auth.context import CallContext, bind, current, unbind
from mcp_auth.errors import ServiceUnavailable
from mcp_auth.observability.metrics import ToolNames
from mcp_auth.tokens import TokenService
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("mcp_auth.middleware")


class TokenResolutionMiddleware:
    def __init__(self, app: ASGIApp, *, tokens: TokenService, tool_names: ToolNames | None = None) -> None:
        self.app = app
        self.tokens = tokens
        self.tool_names = tool_names or ToolNames()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        policy = called_tool(scope) if scope["type"] == "http" else None
        if policy is None or not policy.needs_token:
            await self.app(scope, receive, send)
            return
        call = await self._resolve(send, policy.name)
        if call is None:
            self.tool_names.record(policy.name, "unavailable")
            return
        token = bind(call)
        try:
            await self.app(scope, receive, send)
        finally:
            unbind(token)

    async def _resolve(self, send: Send, tool: str) -> CallContext | None:
        """The call with its token bound; None when a 503 was sent instead."""
        call = current()
        identity = call.identity
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
        return dataclasses.replace(call, token_key=resolved.key, _token=resolved.value)
