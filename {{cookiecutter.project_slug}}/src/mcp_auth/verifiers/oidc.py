"""OAuth 2.0 / OpenID Connect access tokens: bearer JWTs signed by an external authorization server.

The signing keys are found through the issuer's metadata: RFC 8414's
``/.well-known/oauth-authorization-server`` (path-inserted for an issuer with a path), then
OpenID Connect Discovery's ``{issuer}/.well-known/openid-configuration``. The metadata's
``issuer`` must equal the configured one (RFC 8414 section 3.3: otherwise another server's keys
could be substituted) and its ``jwks_uri`` must be https. The discovered ``jwks_uri`` is kept for
the life of the process; discovery is retried, rate-limited, with the JWKS fetch.

A token must be RS256 or ES256, carry ``exp``, ``iss``, ``aud`` and ``sub``, name the issuer,
and list the audience (this server's resource URL, RFC 8707) in ``aud``, so a token minted for
another service is refused. ``nbf`` and ``iat`` are checked when present: many issuers omit them.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from mcp_auth.errors import ServiceUnavailable
from mcp_auth.identity import Identity
from mcp_auth.verifiers.jwks import ALGORITHMS, JwksCache, invalid_jwt, tls_context, verified_claims

LEEWAY_SECONDS = 30  # clock skew between a third-party issuer and this host
METADATA_UNAVAILABLE = "OIDC issuer metadata unavailable"
KEYS_UNAVAILABLE = "OIDC issuer keys unavailable"
REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]


class OidcVerifier:
    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        timeout: float = 3.0,
        max_age: float = 3600.0,
        min_refresh_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``ValueError`` when ``issuer`` is not https (http is accepted on a loopback host)."""
        if not secure_url(issuer):
            raise ValueError(f"OIDC issuer {issuer!r} is not an https URL")
        self.issuer = issuer  # compared verbatim with "iss": keep a trailing slash if it has one
        self.audience = audience
        self._timeout = timeout
        self._jwks_uri: str | None = None
        self._jwks = JwksCache(
            self._discover,
            unavailable_message=KEYS_UNAVAILABLE,
            timeout=timeout,
            max_age=max_age,
            min_refresh_interval=min_refresh_interval,
            clock=clock,
        )

    async def verify(self, credential: str) -> Identity | None:
        if not looks_like_jwt(credential):
            return None  # a static token or API key: another verifier may know it
        claims = await verified_claims(
            credential,
            self._jwks,
            algorithms=ALGORITHMS,
            audience=self.audience,
            issuer=self.issuer,
            leeway=LEEWAY_SECONDS,
            require=REQUIRED_CLAIMS,
        )
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise invalid_jwt("empty sub claim")
        return Identity(
            subject=subject,
            method="bearer",
            email=verified_email(claims),
            scopes=token_scopes(claims),
            expires_at=int(claims["exp"]),  # PyJWT checked it converts
            claims=claims,
        )

    async def _discover(self) -> str:
        if self._jwks_uri is None:
            self._jwks_uri = await discover_jwks_uri(self.issuer, request_timeout=self._timeout)
        return self._jwks_uri


def looks_like_jwt(credential: str) -> bool:
    """Three dot-separated parts with a decodable header: the cheap test that tells a JWT from
    an opaque token (``mcpk_...`` keys, static bearer tokens) before any key is fetched."""
    if credential.count(".") != 2:
        return False
    try:
        jwt.get_unverified_header(credential)
    except jwt.PyJWTError:
        return False
    return True


def verified_email(claims: dict[str, Any]) -> str | None:
    email = claims.get("email")
    # Some issuers (Cognito) send email_verified as a string.
    if not isinstance(email, str) or not email or claims.get("email_verified") in (False, "false"):
        return None
    return email


def token_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """``scope`` (RFC 9068: space-separated) or else ``scp`` (Okta, Entra: list or string).

    A malformed claim refuses the token: read as "no scopes" it would mean unrestricted.
    """
    for name in ("scope", "scp"):
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return frozenset(value)
        raise invalid_jwt(f"{name} claim is neither a string nor a list of strings")
    return frozenset()


def secure_url(url: str) -> bool:
    """https, or http on a loopback host (development and tests)."""
    parts = urlsplit(url)
    if not parts.hostname or parts.scheme not in ("https", "http"):
        return False
    if parts.scheme == "https" or parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def metadata_urls(issuer: str) -> list[str]:
    """Where the issuer's metadata may be, in the order tried (RFC 8414 section 3.1, then OIDC)."""
    parts = urlsplit(issuer)
    origin, path = f"{parts.scheme}://{parts.netloc}", parts.path.rstrip("/")
    return [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}{path}/.well-known/openid-configuration",
    ]


async def discover_jwks_uri(issuer: str, *, request_timeout: float = 3.0) -> str:
    """The ``jwks_uri`` of the first metadata document that names ``issuer``;
    ``ServiceUnavailable`` when none does (its detail says why, per URL, for the log)."""
    problems: list[str] = []
    async with httpx.AsyncClient(timeout=request_timeout, verify=tls_context()) as client:
        for url in metadata_urls(issuer):
            try:
                response = await client.get(url, headers={"Accept": "application/json"})
                response.raise_for_status()
                return _jwks_uri(response.json(), issuer)
            except httpx.HTTPStatusError as exc:
                problems.append(f"{url}: HTTP {exc.response.status_code}")
            except (httpx.HTTPError, ValueError) as exc:
                problems.append(f"{url}: {str(exc) or type(exc).__name__}")
    raise ServiceUnavailable(METADATA_UNAVAILABLE, detail="; ".join(problems))


def _jwks_uri(document: object, issuer: str) -> str:
    if not isinstance(document, dict):
        raise ValueError("metadata is not a JSON object")
    if document.get("issuer") != issuer:
        raise ValueError(f"metadata names issuer {document.get('issuer')!r}")
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not secure_url(jwks_uri):
        raise ValueError(f"jwks_uri {jwks_uri!r} is not an https URL")
    return jwks_uri
