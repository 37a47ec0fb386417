"""ASGI middleware: authenticate every request, resolve the upstream token for tool calls.

Shaped like Starlette's AuthenticationMiddleware: one authenticator decides, and errors become
responses in one place (401 / 503 JSON per DESIGN.md section 5). It is a plain ASGI callable, not
FastMCP's RequireAuthMiddleware, because the contract needs our own 401 body, a 503 when the
JWKS or token store cannot answer, and a look at the JSON-RPC body to spot ``tools/call``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from mcp_auth.authentication import Authenticator
from mcp_auth.context import CallContext, bind, unbind
from mcp_auth.errors import AuthenticationFailed, ServiceUnavailable
from mcp_auth.token_access import TokenAccess
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("mcp_auth.middleware")

PUBLIC_PATHS = frozenset({"/health", "/status"})
MAX_BODY_BYTES = 4 * 1024 * 1024


async def send_json(send: Send, status: int, body: dict[str, str], headers: Iterable[tuple[str, str]] = ()) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"),
        *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def unavailable_body(message: str) -> dict[str, str]:
    return {"error": "service_unavailable", "message": message}


def is_tool_call(body: bytes) -> bool:
    """True when the JSON-RPC message (or any message of a batch) is ``tools/call``."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return False  # FastMCP answers the parse error itself
    messages = message if isinstance(message, list) else [message]
    return any(isinstance(m, dict) and m.get("method") == "tools/call" for m in messages)


class McpAuthMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticator: Authenticator,
        tokens: TokenAccess,
        public_paths: frozenset[str] = PUBLIC_PATHS,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.tokens = tokens
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (scope["type"] == "http" and scope["path"] in self.public_paths):
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websocket routes exist; never let one in unauthenticated
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        remote = client[0] if client else "unknown"
        try:
            identity = await self.authenticator.authenticate(headers)
        except AuthenticationFailed as exc:
            logger.warning(
                "authentication rejected",
                extra={"reason": exc.reason, "remote_addr": remote, "path": scope["path"]},
            )
            error = ', error="invalid_token"' if "authorization" in headers else ""
            await send_json(
                send,
                401,
                {"error": "unauthorized", "message": exc.message},
                [("www-authenticate", f'Bearer realm="mcp"{error}')],
            )
            return
        except ServiceUnavailable as exc:
            logger.error("authentication unavailable", extra={"reason": exc.message, "remote_addr": remote})
            await send_json(send, 503, unavailable_body(exc.message))
            return

        call = CallContext(identity=identity, service=self.tokens.service)
        if scope["method"] == "POST":
            body = await _read_body(receive)
            if body is None:
                await send_json(send, 413, {"error": "payload_too_large", "message": "request body too large"})
                return
            receive = _replay(body, receive)
            if is_tool_call(body):
                try:
                    resolved = await self.tokens.resolve(identity)
                except ServiceUnavailable as exc:
                    logger.error(
                        "token store unavailable",
                        extra={"reason": exc.message, "identity": identity.subject},
                    )
                    await send_json(send, 503, unavailable_body(exc.message))
                    return
                if resolved is None:
                    # Per DESIGN.md section 4: 503 on tools/call until the token can be resolved.
                    message = (
                        f"no {self.tokens.service} token is stored for {identity.subject!r} or 'default' "
                        f"(store: {self.tokens.store.name})"
                    )
                    logger.error("no upstream token", extra={"reason": message, "identity": identity.subject})
                    await send_json(send, 503, unavailable_body(message))
                    return
                call = CallContext(
                    identity=identity, service=self.tokens.service, token_key=resolved.key, _token=resolved.value
                )
        token = bind(call)
        try:
            await self.app(scope, receive, send)
        finally:
            unbind(token)


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
