"""Cloudflare Access: the signed JWT Cloudflare puts in ``Cf-Access-Jwt-Assertion``.

Checks per Cloudflare's docs: RS256 signature by a key of the team's JWKS, ``aud`` contains one of
the application's AUD tags, ``iss`` is the team domain, ``exp``/``nbf``, ``type == "app"``.
The unsigned ``Cf-Access-Authenticated-User-Email`` header is never read.

Scopes come from the caller's groups through a configured group -> scopes map
(``MCP_CF_GROUP_SCOPES``); a caller in no mapped group carries no scopes (unrestricted). Groups
are read from a top-level ``groups`` claim or, where Access passes identity-provider claims
through (OIDC claims of the application), from ``custom.groups``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mcp_auth.identity import Identity
from mcp_auth.scopes import parse_scopes
from mcp_auth.verifiers.jwks import INVALID_JWT, JwksCache, invalid_jwt, verified_claims

logger = logging.getLogger("mcp_auth.cloudflare")

__all__ = ["INVALID_JWT", "CloudflareAccessVerifier", "parse_group_scopes"]

LEEWAY_SECONDS = 5  # clock skew between Cloudflare's edge and this host
GROUP_FIELDS = ("name", "id", "email")  # how an IdP group object may be named in the mapping


class CloudflareAccessVerifier:
    def __init__(
        self,
        *,
        team_domain: str,
        audiences: list[str],
        jwks: JwksCache,
        group_scopes: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self._issuer = team_domain.rstrip("/")
        self._audiences = audiences
        self._jwks = jwks
        self._group_scopes = dict(group_scopes or {})

    async def verify(self, credential: str) -> Identity:
        claims = await self._claims(credential)
        subject, email = self._subject(claims)
        return Identity(
            subject=subject,
            method="cloudflare",
            email=email,
            scopes=self._scopes(_groups(claims)),
            expires_at=int(claims["exp"]),  # PyJWT checked it converts
            claims=claims,
        )

    @staticmethod
    def _subject(claims: dict[str, Any]) -> tuple[str, str | None]:
        email = claims.get("email")
        if isinstance(email, str) and email:
            return email, email
        # Service tokens carry the token's Client ID as common_name and no email.
        common_name = claims.get("common_name")
        if isinstance(common_name, str) and common_name:
            return common_name, None
        raise invalid_jwt("no email or common_name claim")

    async def _claims(self, token: str) -> dict[str, Any]:
        claims = await verified_claims(
            token,
            self._jwks,
            algorithms=["RS256"],
            audience=self._audiences,
            issuer=self._issuer,
            leeway=LEEWAY_SECONDS,
            require=["exp", "iss", "aud"],
        )
        if claims.get("type") != "app":
            raise invalid_jwt("token type is not app")
        return claims

    def _scopes(self, groups: object) -> frozenset[str]:
        """The union of the scopes mapped to the caller's groups (strings, or IdP group objects
        matched by name, id or email); anything unmapped or malformed adds nothing."""
        if not self._group_scopes or not isinstance(groups, list):
            return frozenset()
        scopes: set[str] = set()
        for group in groups:
            names = [group] if isinstance(group, str) else []
            if isinstance(group, dict):
                names = [value for value in (group.get(f) for f in GROUP_FIELDS) if isinstance(value, str)]
            for name in names:
                scopes |= self._group_scopes.get(name, frozenset())
        return frozenset(scopes)


def _groups(claims: dict[str, Any]) -> object:
    groups = claims.get("groups")
    custom = claims.get("custom")
    if groups is None and isinstance(custom, dict):
        groups = custom.get("groups")
    return groups


def parse_group_scopes(text: str) -> dict[str, frozenset[str]]:
    """``group=scope scope;group2=scope`` -> ``{"group": {"scope", ...}, ...}``.

    Group names may hold spaces (IdP display names); a group listed twice gets the union.
    ``ValueError`` names the first malformed entry.
    """
    mapping: dict[str, frozenset[str]] = {}
    for entry in text.split(";"):
        if not entry.strip():
            continue  # tolerate a trailing ";"
        group, sep, scopes = entry.partition("=")
        group, granted = group.strip(), parse_scopes([scopes])
        if not sep or not group or not granted:
            raise ValueError(f"group scope entry {entry.strip()!r} is not 'group=scope [scope ...]'")
        mapping[group] = mapping.get(group, frozenset()) | granted
    return mapping
