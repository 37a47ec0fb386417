"""Which credential a request carries, and which verifier decides it, by MCP_AUTH_MODE.

Rules: a credential that is present decides, Cloudflare first (an invalid Cloudflare JWT is a
401 even next to a valid bearer token); in
``cloudflare`` mode bearer tokens are refused, in ``bearer`` mode Cloudflare JWTs are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mcp_auth.config import AuthMode
from mcp_auth.errors import AuthenticationFailed
from mcp_auth.identity import Identity
from mcp_auth.verifiers.base import Verifier
from starlette.requests import cookie_parser

CF_HEADER = "cf-access-jwt-assertion"
CF_COOKIE = "CF_Authorization"

_ASK = {
    "cloudflare": "send the Cloudflare Access JWT in the Cf-Access-Jwt-Assertion header "
    "(reach the server through Cloudflare Access)",
    "bearer": "send Authorization: Bearer <token>",
    "both": "send Authorization: Bearer <token> or a Cloudflare Access JWT (Cf-Access-Jwt-Assertion header)",
}


def cloudflare_jwt(headers: Mapping[str, str]) -> str | None:
    token = headers.get(CF_HEADER, "").strip()
    if token:
        return token
    raw_cookie = headers.get("cookie")
    if raw_cookie:
        # Two cookies of that name (one planted from a sibling subdomain) are refused like two
        # headers: the order a browser sends them in must not pick the identity.
        if sum(1 for chunk in raw_cookie.split(";") if chunk.partition("=")[0].strip() == CF_COOKIE) > 1:
            raise AuthenticationFailed(
                f"Send one credential: the request has more than one {CF_COOKIE} cookie", f"duplicate {CF_COOKIE}"
            )
        # Starlette's parser, like browsers: a malformed cookie elsewhere in the header does not
        # hide CF_Authorization (http.cookies.SimpleCookie gives up on the whole header).
        value = cookie_parser(raw_cookie).get(CF_COOKIE, "").strip()
        if value:
            return value
    return None


def bearer_token(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


class Authenticator:
    def __init__(
        self,
        mode: AuthMode,
        *,
        cloudflare: Verifier | None,
        bearer: Sequence[Verifier],
    ) -> None:
        self.mode = mode
        self._cloudflare = cloudflare if mode in ("cloudflare", "both") else None
        self._bearer = list(bearer) if mode in ("bearer", "both") else []

    @property
    def missing_credential_message(self) -> str:
        return f"Authentication required: {_ASK[self.mode]}"

    async def authenticate(self, headers: Mapping[str, str]) -> Identity:
        """Identity of the caller, or AuthenticationFailed / ServiceUnavailable."""
        jwt_token = cloudflare_jwt(headers)
        token = bearer_token(headers)
        if jwt_token is not None:
            if self._cloudflare is None:
                raise AuthenticationFailed(
                    "Cloudflare Access JWTs are not accepted (MCP_AUTH_MODE=bearer): " + _ASK["bearer"]
                )
            identity = await self._cloudflare.verify(jwt_token)
            if identity is None:  # pragma: no cover - the Cloudflare verifier always decides
                raise AuthenticationFailed("Invalid JWT")
            return identity
        if token is not None:
            if not self._bearer:
                why = "MCP_AUTH_MODE=cloudflare" if self.mode == "cloudflare" else "none are configured"
                raise AuthenticationFailed(f"Bearer tokens are not accepted ({why}): " + _ASK["cloudflare"])
            for verifier in self._bearer:
                identity = await verifier.verify(token)
                if identity is not None:
                    return identity
            raise AuthenticationFailed("Invalid bearer token")
        raise AuthenticationFailed(self.missing_credential_message)
