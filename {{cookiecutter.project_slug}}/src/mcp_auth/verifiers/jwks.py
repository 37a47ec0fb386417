"""Cache of a JSON Web Key Set fetched over HTTP, and the JWT checks shared by its users.

PyJWT's own PyJWKClient is synchronous (urllib, would block the event loop) and refetches on
every unknown ``kid`` without a rate limit, which lets forged tokens with random kids turn the
server into a JWKS flooder. This keeps PyJWT's key parsing and adds: async httpx with a timeout,
single-flight refresh, a minimum interval between refetches, and keeping the last good keys
when a refresh fails.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import httpx
import jwt
from mcp_auth.errors import AuthenticationFailed, ServiceUnavailable

logger = logging.getLogger("mcp_auth.jwks")

INVALID_JWT = "Invalid JWT"
ALGORITHMS = frozenset({"RS256", "ES256"})
"""The only signature algorithms accepted: asymmetric, so a published key cannot forge (no HS*),
and never ``none``."""

UrlSource = str | Callable[[], Awaitable[str]]
"""The JWKS URL, or an async callable that finds it (OIDC discovery); the callable raises
``ServiceUnavailable`` when it cannot."""


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every key and metadata fetch: building one reads the whole CA bundle
    (about 20 ms), which a fresh httpx client would otherwise do on each fetch."""
    return httpx.create_ssl_context()


class JwksCache:
    """The keys of one JWKS; ``get`` raises ``ServiceUnavailable(unavailable_message)`` while it
    holds none (or the URL callable's own error when that failed)."""

    def __init__(
        self,
        url: UrlSource,
        *,
        unavailable_message: str = "Cloudflare Access certificates unavailable",
        timeout: float = 3.0,
        max_age: float = 3600.0,
        min_refresh_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = url
        self.url: str | None = url if isinstance(url, str) else None
        self._message = unavailable_message
        self._unavailable = ServiceUnavailable(unavailable_message, detail=self.url)
        self._timeout = timeout
        self._max_age = max_age
        self._min_refresh_interval = min_refresh_interval
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch of any outcome
        self._forced_at: float | None = None  # last refetch caused by an unknown kid
        self._generation = 0
        self._lock = asyncio.Lock()

    async def get(self, kid: str | None) -> jwt.PyJWK | None:
        """The key for ``kid``; refetches when stale or unknown (rate-limited). ``None``: unknown."""
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at > self._max_age
        if stale and self._elapsed(self._attempted_at, now):
            await self._refresh()
        elif kid and kid not in self._keys and self._elapsed(self._forced_at, now):
            # A rotated key is picked up at once; forged kids cost one fetch per interval.
            self._forced_at = now
            await self._refresh()
        if not self._keys:
            raise ServiceUnavailable(self._unavailable.message, detail=self._unavailable.detail)
        return self._keys.get(kid) if kid else None

    def _elapsed(self, since: float | None, now: float) -> bool:
        return since is None or now - since >= self._min_refresh_interval

    async def _refresh(self) -> None:
        generation = self._generation
        async with self._lock:
            if self._generation != generation:
                return  # another task fetched while we waited: single flight
            self._generation += 1
            self._attempted_at = self._clock()
            try:
                self.url = self._source if isinstance(self._source, str) else await self._source()
            except ServiceUnavailable as exc:
                self._unavailable = exc  # e.g. issuer metadata down: say that, not "no keys"
                return
            self._unavailable = ServiceUnavailable(self._message, detail=self.url)
            keys = await self._fetch(self.url)
            if keys:
                self._keys = keys
                self._fetched_at = self._attempted_at

    async def _fetch(self, url: str) -> dict[str, jwt.PyJWK] | None:
        try:
            async with httpx.AsyncClient(timeout=self._timeout, verify=tls_context()) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
            response.raise_for_status()
            return parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning(
                "JWKS fetch failed",
                extra={"url": url, "reason": type(exc).__name__, "cached_keys": len(self._keys)},
            )
            return None


def parse_jwks(document: object) -> dict[str, jwt.PyJWK]:
    """The usable signing keys of a JWKS document by kid; ``ValueError`` when there are none.

    A key's algorithm is its ``alg``, else PyJWT's guess from ``kty``/``crv`` (RSA -> RS256,
    EC P-256 -> ES256); keys of other algorithms or for encryption are skipped.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or "kid" not in entry or entry.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue  # a key type we do not accept; others may still be usable
        if key.algorithm_name in ALGORITHMS:
            keys[str(entry["kid"])] = key
    if not keys:
        raise ValueError(f"JWKS holds no usable {' or '.join(sorted(ALGORITHMS))} key")
    return keys


def invalid_jwt(reason: str) -> AuthenticationFailed:
    # The reason goes to the server log; the caller sees "Invalid JWT".
    return AuthenticationFailed(INVALID_JWT, reason)


async def verified_claims(
    token: str,
    jwks: JwksCache,
    *,
    algorithms: Collection[str],
    audience: str | list[str],
    issuer: str,
    leeway: float,
    require: list[str],
) -> dict[str, Any]:
    """The claims of ``token`` once its signature (by a key of ``jwks`` whose algorithm is the
    header's, one of ``algorithms``), ``aud``, ``iss``, ``exp`` and ``nbf``/``iat`` (when
    present) check out; ``AuthenticationFailed("Invalid JWT")`` otherwise."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise invalid_jwt("malformed token") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        raise invalid_jwt(f"algorithm {alg!r} is not {' or '.join(sorted(algorithms))}")
    kid = header.get("kid")
    key = await jwks.get(kid if isinstance(kid, str) else None)
    if key is None:
        raise invalid_jwt("unknown signing key id")
    try:
        # Passing the PyJWK makes PyJWT refuse a token whose alg differs from the key's.
        claims: dict[str, Any] = jwt.decode(
            token,
            key=key,
            algorithms=[alg],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": require},
        )
    except jwt.PyJWTError as exc:
        raise invalid_jwt(str(exc)) from None
    return claims
