"""ASGI step 1: authenticate every request except the public probes.

Shaped like Starlette's AuthenticationMiddleware: one backend (the Authenticator) decides, and
``on_error`` turns its failures into the contract's 401 / 503 JSON in one place. Our own rather
than FastMCP's RequireAuthMiddleware: the contract needs our 401 body and a 503 when the JWKS or
the API-key database cannot answer. The identity is bound for the rest of the request
(``mcp_auth.current()``) and
set in ``scope["user"]``/``scope["auth"]`` the way Starlette and the MCP SDK do, so FastMCP's
``get_access_token()`` and its ``auth=`` checks see the caller. Per-caller rate limits apply here.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence

from fastmcp.server.auth import AccessToken
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp_auth.asgi.responses import send_rate_limited, send_unauthorized, send_unavailable
from mcp_auth.authenticator import CF_COOKIE, CF_HEADER, Authenticator, bearer_token, cloudflare_jwt
from mcp_auth.context import CallContext, bind, unbind
from mcp_auth.discovery import ProtectedResource
from mcp_auth.errors import AuthenticationFailed, McpAuthError, ServiceUnavailable
from mcp_auth.identity import Identity
from mcp_auth.observability import metrics, tracing
from mcp_auth.rate_limit import RateLimits, retry_after_header
from mcp_auth.tool_policies import ToolPolicies
from mcp_auth.upstream_http import UpstreamHttp
from mcp_auth.verifiers.cloudflare import INVALID_JWT
from starlette.authentication import AuthCredentials
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
        policies: ToolPolicies,
        public_paths: frozenset[str] = PUBLIC_PATHS,
        resource: ProtectedResource | None = None,
        rate_limits: RateLimits | None = None,
        http: UpstreamHttp | None = None,
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.service = service
        self.policies = policies
        self.public_paths = public_paths | (resource.paths if resource else frozenset())
        self.resource = resource
        self.rate_limits = rate_limits or RateLimits()
        self.http = http or UpstreamHttp()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" or (scope["type"] == "http" and scope["path"] in self.public_paths):
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websocket routes exist; never let one in unauthenticated
            if scope["type"] == "websocket":
                await receive()  # websocket.connect: the ASGI order before a close
            await send({"type": "websocket.close", "code": 1008})
            return
        identity = await self._admit(scope, send)
        if identity is None:
            return
        tracing.set_current(**{tracing.ENDUSER_ID: identity.subject})
        token = bind(CallContext(identity=identity, service=self.service, _http=self.http.client))
        try:
            await self.app(scope, receive, send)
        finally:
            unbind(token)

    async def _admit(self, scope: Scope, send: Send) -> Identity | None:
        """The caller, with ``scope["user"]``/``scope["auth"]`` set; None when an error was sent."""
        address = client_address(scope)
        failures = self.rate_limits.failed_auth_per_address
        if failures is not None and (wait := failures.peek(address)) is not None:
            metrics.record_auth_failure("rate_limited")
            await send_rate_limited(send, retry_after_header(wait), "too many failed authentications; retry later")
            return None
        try:
            identity, credential = await self._authenticate(scope)
        except McpAuthError as exc:
            if failures is not None and isinstance(exc, AuthenticationFailed) and credential_sent(scope):
                failures.hit(address)  # guessing needs a credential; a bare discovery probe is not counted
            await self.on_error(scope, exc, send)
            return None
        per_identity = self.rate_limits.per_identity
        if per_identity is not None and (wait := per_identity.hit(identity.subject)) is not None:
            metrics.record_auth_failure("rate_limited")
            await send_rate_limited(send, retry_after_header(wait), "rate limit exceeded (MCP_RATE_LIMIT); retry later")
            return None
        access = access_token(identity, credential, self.policies.scopes_supported, self.resource)
        # Starlette's and the MCP SDK's shape: FastMCP's get_access_token() and auth checks read it.
        scope["user"] = AuthenticatedUser(access)
        scope["auth"] = AuthCredentials(access.scopes)
        return identity

    async def _authenticate(self, scope: Scope) -> tuple[Identity, str]:
        """The caller and the credential it presented, in the ``mcp_auth.authenticate`` span; a
        failure is counted by its reason."""
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
            return identity, cloudflare_jwt(headers) or bearer_token(headers) or ""

    async def on_error(self, scope: Scope, exc: McpAuthError, send: Send) -> None:
        remote = client_address(scope)
        metadata = self.resource.metadata_url if self.resource else None
        if isinstance(exc, AuthenticationFailed):
            logger.warning(
                "authentication rejected",
                extra={"reason": exc.reason, "remote_addr": remote, "path": scope["path"]},
            )
            await send_unauthorized(
                send, exc.message, credential_sent=credential_sent(scope), resource_metadata=metadata
            )
            return
        reason = exc.log_detail if isinstance(exc, ServiceUnavailable) else exc.message
        logger.error("authentication unavailable", extra={"reason": reason, "remote_addr": remote})
        await send_unavailable(send, exc.message)


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def credential_sent(scope: Scope) -> bool:
    """True when the request carries a credential: a bearer or Cloudflare header, or the
    Cloudflare cookie (a guess in any of them counts against the address)."""
    for name, value in scope["headers"]:
        name = name.lower()
        if name in _CREDENTIAL_HEADERS or (name == b"cookie" and _CF_COOKIE in value):
            return True
    return False


_CREDENTIAL_HEADERS = (b"authorization", CF_HEADER.encode())
_CF_COOKIE = (CF_COOKIE + "=").encode()


_FINGERPRINT_KEY = secrets.token_bytes(32)


def access_token(
    identity: Identity, credential: str, scopes_supported: Sequence[str], resource: ProtectedResource | None
) -> AccessToken:
    """The caller as FastMCP sees it (``get_access_token()``): ``client_id`` is the identity.

    A credential without scopes may call every tool, so it holds every scope the tools ask for
    (FastMCP's ``require_scopes`` then admits it). ``token`` is a per-process fingerprint, never
    the credential: tools must not pass a caller's token on (MCP forbids token passthrough).
    """
    fingerprint = hmac.new(_FINGERPRINT_KEY, credential.encode(), hashlib.sha256).hexdigest()[:32]
    return AccessToken(
        token=f"fp_{fingerprint}",
        client_id=identity.subject,
        subject=identity.subject,
        scopes=sorted(identity.scopes) if identity.restricted else list(scopes_supported),
        expires_at=identity.expires_at,
        resource=resource.resource if resource else None,
        claims={**identity.claims, "auth_method": identity.method, "email": identity.email},
    )


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
