"""Cache of a JSON Web Key Set fetched over HTTP.

PyJWT's own PyJWKClient is synchronous (urllib, would block the event loop) and refetches on
every unknown ``kid`` without a rate limit, which lets forged tokens with random kids turn the
server into a JWKS flooder. This keeps PyJWT's key parsing and adds: async httpx with a timeout,
single-flight refresh, a minimum interval between refetches, and keeping the last good keys
when a refresh fails.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import httpx
import jwt
from mcp_auth.errors import ServiceUnavailable

logger = logging.getLogger("mcp_auth.jwks")


class JwksCache:
    def __init__(
        self,
        url: str,
        *,
        timeout: float = 3.0,
        max_age: float = 3600.0,
        min_refresh_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
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
            raise ServiceUnavailable("Cloudflare Access certificates unavailable", detail=self.url)
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
                async with httpx.AsyncClient(timeout=self._timeout) as client:
                    response = await client.get(self.url, headers={"Accept": "application/json"})
                response.raise_for_status()
                keys = self._parse(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                logger.warning(
                    "JWKS fetch failed",
                    extra={"url": self.url, "reason": type(exc).__name__, "cached_keys": len(self._keys)},
                )
                return
            self._keys = keys
            self._fetched_at = self._attempted_at

    @staticmethod
    def _parse(document: object) -> dict[str, jwt.PyJWK]:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWKS document")
        keys: dict[str, jwt.PyJWK] = {}
        for entry in document["keys"]:
            if not isinstance(entry, dict) or "kid" not in entry:
                continue
            try:
                keys[str(entry["kid"])] = jwt.PyJWK(entry, algorithm="RS256")
            except jwt.PyJWTError:
                continue  # a key type we do not accept; others may still be usable
        if not keys:
            raise ValueError("JWKS holds no usable RS256 key")
        return keys
