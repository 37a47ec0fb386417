"""Cloudflare Access: the signed JWT Cloudflare puts in ``Cf-Access-Jwt-Assertion``.

Checks per Cloudflare's docs: RS256 signature by a key of the team's JWKS, ``aud`` contains one of
the application's AUD tags, ``iss`` is the team domain, ``exp``/``nbf``, ``type == "app"``.
The unsigned ``Cf-Access-Authenticated-User-Email`` header is never read.
"""

from __future__ import annotations

import logging

import jwt
from mcp_auth.errors import AuthenticationFailed
from mcp_auth.identity import Identity
from mcp_auth.verifiers.jwks import JwksCache

logger = logging.getLogger("mcp_auth.cloudflare")

INVALID_JWT = "Invalid JWT"
LEEWAY_SECONDS = 5  # clock skew between Cloudflare's edge and this host


class CloudflareAccessVerifier:
    def __init__(self, *, team_domain: str, audiences: list[str], jwks: JwksCache) -> None:
        self._issuer = team_domain.rstrip("/")
        self._audiences = audiences
        self._jwks = jwks

    async def verify(self, credential: str) -> Identity:
        claims = await self._claims(credential)
        email = claims.get("email")
        if isinstance(email, str) and email:
            return Identity(subject=email, method="cloudflare", email=email)
        # Service tokens carry the token's Client ID as common_name and no email.
        common_name = claims.get("common_name")
        if isinstance(common_name, str) and common_name:
            return Identity(subject=common_name, method="cloudflare")
        raise self._invalid("no email or common_name claim")

    async def _claims(self, token: str) -> dict[str, object]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise self._invalid("malformed token") from None
        if header.get("alg") != "RS256":
            raise self._invalid(f"algorithm {header.get('alg')!r} is not RS256")
        kid = header.get("kid")
        key = await self._jwks.get(kid if isinstance(kid, str) else None)
        if key is None:
            raise self._invalid("unknown signing key id")
        try:
            claims: dict[str, object] = jwt.decode(
                token,
                key=key.key,
                algorithms=["RS256"],
                audience=self._audiences,
                issuer=self._issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise self._invalid(str(exc)) from None
        if claims.get("type") != "app":
            raise self._invalid("token type is not app")
        return claims

    @staticmethod
    def _invalid(reason: str) -> AuthenticationFailed:
        # The reason goes to the server log; the caller sees "Invalid JWT".
        return AuthenticationFailed(INVALID_JWT, reason)
