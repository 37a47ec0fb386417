"""ASGI step 1: authenticate every request except the public probes.

Shaped like Starlette's AuthenticationMiddleware: one backend (the Authenticator) decides, and
``on_error`` turns its failures into the contract's 401 / 503 JSON in one place. Our own rather
than FastMCP's RequireAuthMiddleware: the contract needs our 401 body and a 503 when the JWKS or
the API-key database cannot answer. The identity is bound for the rest of the request
(``mcp_auth.current()``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from mcp_auth.asgi.responses import send_unauthorized, send_unavailable
from mcp_auth.authenticator import CF_HEADER, Authenticator, bearer_token
from mcp_auth.context import CallContext, bind, unbind
from mcp_auth.errors import AuthenticationFailed, McpAuthError, ServiceUnavailable
from mcp_auth.identity import Identity
from mcp_auth.observability import metrics, tracing
from mcp_auth.verifiers.cloudflare import INVALID_JWT
from starlette.types import ASGIApp, Receive, Scope, Send

logger = logging.getLogger("mcp_auth.middleware")

PUBLIC_PATHS = frozenset({"/health", "/status"})
SINGLE_CREDENTIAL_HEADERS = ("authorization", CF_HEADER)
INVALID_API_KEY = "Invalid API key"  # mcp_auth.db.keys' message (importing it would load SQLAlchemy)
API_KEY_PREFIX = "mcpk_"


def credential_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Header names lowercased; several Cookie headers (HTTP/2 splits them) joined. Two
    Authorization or Cf-Access-Jwt-Assertion headers are refused rather than one picked: a proxy
    and a client disagreeing about the credential must not be settled by header order."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name in headers:
            if name in SINGLE_CREDENTIAL_HEADERS:
                raise AuthenticationFailed(
                    f"Send one credential: the request has more than one {name.title()} header",
                    f"duplicate {name} header",
                )
            value = f"{headers[name]}; {value}" if name == "cookie" else value
        headers[name] = value
    return headers


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
        try:
            identity = await self._authenticate(scope)
        except McpAuthError as exc:
            await self.on_error(scope, exc, send)
            return
        tracing.set_current(**{tracing.ENDUSER_ID: identity.subject})
        token = bind(CallContext(identity=identity, service=self.service))
        try:
            await self.app(scope, receive, send)
        finally:
            unbind(token)

    async def _authenticate(self, scope: Scope) -> Identity:
        """The caller, in the ``mcp_auth.authenticate`` span; a failure is counted by its reason."""
        with tracing.span("mcp_auth.authenticate", {"mcp_auth.auth.mode": self.authenticator.mode}) as span:
            headers: dict[str, str] | None = None
            try:
                headers = credential_headers(scope["headers"])
                identity = await self.authenticator.authenticate(headers)
            except McpAuthError as exc:
                reason = failure_reason(exc, headers)
                metrics.record_auth_failure(reason)
                span.set_attribute("mcp_auth.auth.failure_reason", reason)
                tracing.fail(span, reason)
                raise
            span.set_attributes({tracing.ENDUSER_ID: identity.subject, "mcp_auth.auth.method": identity.method})
            return identity

    async def on_error(self, scope: Scope, exc: McpAuthError, send: Send) -> None:
        client = scope.get("client")
        remote = client[0] if client else "unknown"
        if isinstance(exc, AuthenticationFailed):
            logger.warning(
                "authentication rejected",
                extra={"reason": exc.reason, "remote_addr": remote, "path": scope["path"]},
            )
            credential_sent = any(name.lower() == b"authorization" for name, _ in scope["headers"])
            await send_unauthorized(send, exc.message, credential_sent=credential_sent)
            return
        reason = exc.log_detail if isinstance(exc, ServiceUnavailable) else exc.message
        logger.error("authentication unavailable", extra={"reason": reason, "remote_addr": remote})
        await send_unavailable(send, exc.message)


def failure_reason(exc: McpAuthError, headers: Mapping[str, str] | None) -> metrics.AuthFailureReason:
    """The fixed label of an authentication failure (never the free-text reason): headers is None
    when they could not be read (two credential headers)."""
    if not isinstance(exc, AuthenticationFailed):
        return "unavailable"
    if headers is None or exc.reason.startswith("duplicate"):
        return "duplicate"
    if "not accepted" in exc.message:
        return "not_accepted"
    if exc.message == INVALID_JWT:
        return "invalid_jwt"
    token = bearer_token(headers)
    if exc.message == INVALID_API_KEY or (token is not None and token.startswith(API_KEY_PREFIX)):
        return "invalid_api_key"
    return "invalid_bearer" if token is not None else "missing"
