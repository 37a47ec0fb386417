"""Phase 3 token store: the upstream token lives in Infisical and is read over its REST API.

Why a small client of our own instead of the official ``infisicalsdk``: the SDK sets no request
timeout (a hung Infisical would hang every tool call), keys its cache without the project, retries
a dead host for about 15 s and never renews an expired access token. What we need is two calls:

- ``POST /api/v1/auth/universal-auth/login`` ``{clientId, clientSecret}`` ->
  ``{accessToken, expiresIn, accessTokenMaxTTL, tokenType}`` (machine identity, universal auth);
- ``GET /api/v4/secrets/{secretName}?projectId=&environment=&secretPath=`` with
  ``Authorization: Bearer`` -> ``{"secret": {"secretKey": ..., "secretValue": ..., ...}}``.

Infisical removed API keys (the server rejects ``x-api-key``), so ``INFISICAL_API_KEY`` is taken as
a ready access token: it is sent as the Bearer token and never renewed.

The decrypted value is cached in memory for ``MCP_TOKEN_CACHE_TTL`` seconds. Concurrent reads of a
cold cache share one fetch (single-flight), so a burst of tool calls costs Infisical one request,
and an outage costs each caller at most one timeout instead of a queue of them. An expired entry
is never served stale: if Infisical cannot answer, the caller gets a 503 naming the cause.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeGuard
from urllib.parse import quote

import httpx
from mcp_auth.errors import ConfigError, ReadOnlyStore, ServiceUnavailable
from mcp_auth.stores.base import DEFAULT_KEY
from pydantic import SecretStr

if TYPE_CHECKING:
    from mcp_auth.config import McpAuthSettings

logger = logging.getLogger(__name__)

DEFAULT_HOST = "https://app.infisical.com"
LOGIN_PATH = "/api/v1/auth/universal-auth/login"
SECRETS_ENDPOINT = "/api/v4/secrets/"


@dataclass(slots=True)
class _AccessToken:
    value: str = field(repr=False)
    renew_at: float | None  # clock time after which we log in again; None: never expires


@dataclass(slots=True)
class _CacheEntry:
    value: str = field(repr=False)
    expires_at: float


CacheKey = tuple[str, str, str, str, str]


class InfisicalStore:
    """Read-only store serving one shared token (``<service_name>/default``) from Infisical."""

    name = "infisical"

    def __init__(
        self,
        *,
        project_id: str,
        secret_name: str,
        service_name: str,
        host: str = DEFAULT_HOST,
        environment: str = "prod",
        secret_path: str = "/",  # noqa: S107 (a folder in Infisical, not a password)
        client_id: str | None = None,
        client_secret: SecretStr | str | None = None,
        access_token: SecretStr | str | None = None,
        cache_ttl: float = 300.0,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not project_id:
            raise ConfigError("INFISICAL_PROJECT_ID is required when MCP_TOKEN_STORE=infisical")
        client_secret = SecretStr(client_secret) if isinstance(client_secret, str) else client_secret
        access_token = SecretStr(access_token) if isinstance(access_token, str) else access_token
        self._universal_auth = bool(client_id and client_secret)
        if not self._universal_auth and not access_token:
            raise ConfigError(
                "INFISICAL_CLIENT_ID and INFISICAL_CLIENT_SECRET (universal auth) or INFISICAL_API_KEY "
                "is required when MCP_TOKEN_STORE=infisical"
            )
        self._base_url = _normalize_host(host)
        self._project_id = project_id
        self._environment = environment
        self._secret_path = secret_path or "/"
        self._secret_name = secret_name
        self._service_name = service_name
        self._client_id = client_id
        self._client_secret = client_secret
        self._cache_ttl = cache_ttl
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout, pool=connect_timeout)
        # httpx's read timeout is per socket read; a server trickling bytes could stretch one call
        # far beyond it, so every call also gets an overall deadline.
        self._deadline = connect_timeout + read_timeout
        self._clock = clock

        # Universal auth wins when configured (its tokens renew); otherwise the static token.
        static = None if self._universal_auth or access_token is None else access_token.get_secret_value()
        self._access: _AccessToken | None = None if static is None else _AccessToken(static, renew_at=None)
        self._client: httpx.AsyncClient | None = None
        self._login_lock: asyncio.Lock | None = None
        self._cache: dict[CacheKey, _CacheEntry] = {}
        self._inflight: dict[CacheKey, asyncio.Task[str]] = {}
        self._generation = 0  # bumped by invalidate(): fetches started before it are not cached

    @classmethod
    def from_settings(
        cls,
        settings: McpAuthSettings,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> InfisicalStore:
        return cls(
            host=settings.infisical_host,
            project_id=settings.infisical_project_id or "",
            environment=settings.infisical_environment,
            secret_path=settings.infisical_secret_path,
            secret_name=settings.infisical_secret_name or settings.service_token_env,
            service_name=settings.service_name,
            client_id=settings.infisical_client_id,
            client_secret=settings.infisical_client_secret,
            access_token=settings.infisical_api_key,
            cache_ttl=settings.token_cache_ttl,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            clock=clock,
        )

    # ----- TokenStore -----------------------------------------------------------------------

    async def get(self, service: str, key: str) -> str | None:
        # Infisical holds one shared token; per-caller keys live in the database store.
        if service != self._service_name or key != DEFAULT_KEY:
            return None
        return await self._cached_value()

    async def set(self, service: str, key: str, value: str) -> None:
        raise ReadOnlyStore(self._read_only_message())

    async def delete(self, service: str, key: str) -> bool:
        raise ReadOnlyStore(self._read_only_message())

    async def check(self) -> None:
        """Readiness: the token can be handed out. Served from the cache, so ``/status`` probes
        cost Infisical at most one request per TTL."""
        await self._cached_value()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def invalidate(self) -> None:
        """Drop the cached value so the next read refetches (operator refresh after a rotation).

        Synchronous so it can run from a signal handler. A fetch already in flight still answers
        its waiters but its (possibly pre-rotation) value is not cached.
        """
        self._generation += 1
        self._cache.clear()
        self._inflight.clear()
        logger.info("Infisical token cache invalidated; the next read refetches %s", self._secret_name)

    # ----- cache + single-flight --------------------------------------------------------------

    @property
    def _cache_key(self) -> CacheKey:
        return (self._base_url, self._project_id, self._environment, self._secret_path, self._secret_name)

    async def _cached_value(self) -> str:
        key = self._cache_key
        entry = self._cache.get(key)
        if entry is not None and self._clock() < entry.expires_at:
            return entry.value
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch_and_cache(key, self._generation))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._fetch_done(key, done))
        # shield: one caller giving up (client disconnect) must not cancel the others' fetch.
        return await asyncio.shield(task)

    def _fetch_done(self, key: CacheKey, task: asyncio.Task[str]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure does not warn at exit

    async def _fetch_and_cache(self, key: CacheKey, generation: int) -> str:
        value = await self._fetch()
        if generation == self._generation and self._cache_ttl > 0:
            self._cache[key] = _CacheEntry(value, self._clock() + self._cache_ttl)
        return value

    # ----- Infisical API --------------------------------------------------------------------

    async def _fetch(self) -> str:
        token = await self._access_token()
        response = await self._read_secret(token)
        if _token_rejected(response) and self._universal_auth:
            # Revoked, or expired earlier than expiresIn said (clock skew): log in once more.
            logger.info("Infisical rejected the access token (HTTP %s); logging in again", response.status_code)
            self._forget(token)
            token = await self._access_token()
            response = await self._read_secret(token)
        return self._secret_value(response)

    async def _access_token(self) -> str:
        if not self._universal_auth:
            assert self._access is not None  # the static token, checked in __init__
            return self._access.value
        if self._login_lock is None:
            self._login_lock = asyncio.Lock()
        async with self._login_lock:
            if self._access is None or (self._access.renew_at is not None and self._clock() >= self._access.renew_at):
                self._access = await self._login()
            return self._access.value

    def _forget(self, token: str) -> None:
        # Only drop the token we used: a concurrent login may already have replaced it.
        if self._access is not None and self._access.value == token:
            self._access = None

    async def _login(self) -> _AccessToken:
        assert self._client_id is not None and self._client_secret is not None
        response = await self._request(
            "POST",
            LOGIN_PATH,
            json={"clientId": self._client_id, "clientSecret": self._client_secret.get_secret_value()},
        )
        if response.status_code == 404:  # no such route: not an Infisical server
            self._log_rejection("universal auth login", response)
            raise ServiceUnavailable(
                "Infisical login endpoint not found (HTTP 404); check INFISICAL_HOST", detail=self._base_url
            )
        if response.status_code in (400, 401, 403, 422):
            self._log_rejection("universal auth login", response)
            raise ServiceUnavailable(
                f"Infisical authentication failed (universal auth login: HTTP {response.status_code}; "
                "check INFISICAL_CLIENT_ID and INFISICAL_CLIENT_SECRET)"
            )
        self._raise_for_status(response, "universal auth login")
        body = _json(response)
        token, expires_in = body.get("accessToken"), body.get("expiresIn")
        if not isinstance(token, str) or not token or not _is_number(expires_in):
            raise ServiceUnavailable("Infisical returned an unexpected response to universal auth login")
        lifetime = float(expires_in)
        # expiresIn 0 means a token without TTL. Otherwise renew a little early (10%, at most 60 s)
        # so a token never expires between our check and Infisical's.
        renew_at = None if lifetime <= 0 else self._clock() + lifetime - min(60.0, lifetime / 10)
        logger.debug("logged in to Infisical as machine identity %s", self._client_id)
        return _AccessToken(token, renew_at)

    async def _read_secret(self, token: str) -> httpx.Response:
        return await self._request(
            "GET",
            SECRETS_ENDPOINT + quote(self._secret_name, safe=""),
            params={
                "projectId": self._project_id,
                "environment": self._environment,
                "secretPath": self._secret_path,
                "viewSecretValue": "true",
                # Same defaults as Infisical's CLI and UI: references and imports resolve.
                "expandSecretReferences": "true",
                "include_imports": "true",
            },
            headers={"Authorization": f"Bearer {token}"},
        )

    def _secret_value(self, response: httpx.Response) -> str:
        status = response.status_code
        if status == 404:
            self._log_rejection("secret read", response)
            raise ServiceUnavailable(
                f"secret {self._secret_name} not found in Infisical "
                "(check INFISICAL_PROJECT_ID, INFISICAL_ENVIRONMENT and INFISICAL_SECRET_PATH)",
                detail=self._where,
            )
        if _token_rejected(response):
            self._log_rejection("secret read", response)
            hint = "universal auth access token" if self._universal_auth else "INFISICAL_API_KEY"
            raise ServiceUnavailable(f"Infisical authentication failed ({hint} rejected: HTTP {status})")
        if status == 403:
            self._log_rejection("secret read", response)
            raise ServiceUnavailable(
                f"Infisical denied access to secret {self._secret_name}; give the machine identity read access to it",
                detail=self._where,
            )
        self._raise_for_status(response, "secret read")
        secret = _json(response).get("secret")
        value = secret.get("secretValue") if isinstance(secret, dict) else None
        if not isinstance(secret, dict) or not isinstance(value, str):
            raise ServiceUnavailable("Infisical returned an unexpected response to the secret read")
        if secret.get("secretValueHidden") is True:
            raise ServiceUnavailable(
                f"Infisical hid the value of secret {self._secret_name}; "
                "give the machine identity read-value access to it",
                detail=self._where,
            )
        if not value:
            raise ServiceUnavailable(f"secret {self._secret_name} is empty in Infisical", detail=self._where)
        logger.debug("read secret %s from Infisical (%s)", self._secret_name, self._where)
        return value

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self._base_url,
                timeout=self._timeout,
                verify=_tls_context(),
                headers={"Accept": "application/json", "User-Agent": "mcp-auth"},
            )
        try:
            async with asyncio.timeout(self._deadline):
                return await self._client.request(method, path, **kwargs)
        except (httpx.TimeoutException, TimeoutError):
            raise ServiceUnavailable(
                "Infisical unreachable (request timed out)", detail=f"request to {self._base_url}"
            ) from None
        except httpx.HTTPError as exc:
            # Connection refused, DNS failure, TLS error, reset: the class name is diagnostic
            # enough, and unlike str(exc) it can carry no URL or credential.
            raise ServiceUnavailable(
                f"Infisical unreachable (connection failed: {type(exc).__name__})",
                detail=f"connection to {self._base_url}",
            ) from None

    def _raise_for_status(self, response: httpx.Response, stage: str) -> None:
        status = response.status_code
        if status < 400:
            return
        self._log_rejection(stage, response)
        if status >= 500:
            raise ServiceUnavailable(f"Infisical unreachable (HTTP {status})")
        if status == 429:
            raise ServiceUnavailable("Infisical rate limit exceeded (HTTP 429)")
        raise ServiceUnavailable(f"Infisical rejected the {stage} (HTTP {status})")

    def _log_rejection(self, stage: str, response: httpx.Response) -> None:
        # Infisical's own message says why (locked identity, expired client secret...). It is
        # logged, not put into the 503, and scrubbed of our credentials in case it echoes them.
        message = str(_json(response).get("message", ""))[:300]
        for secret in self._secrets():
            message = message.replace(secret, "[redacted]")
        logger.warning("Infisical %s failed: HTTP %s %s", stage, response.status_code, message)

    def _secrets(self) -> list[str]:
        found = [self._access.value] if self._access is not None else []
        if self._client_secret is not None:
            found.append(self._client_secret.get_secret_value())
        return [s for s in found if s]

    @property
    def _where(self) -> str:
        where = f"project {self._project_id}, environment {self._environment}"
        return where if self._secret_path in ("", "/") else f"{where}, path {self._secret_path}"

    def _read_only_message(self) -> str:
        return (
            f"the {self._service_name} token is managed in Infisical (project {self._project_id}, "
            f"secret {self._secret_name}); change it there: the server picks it up when its cache "
            "expires (MCP_TOKEN_CACHE_TTL) or is refreshed"
        )


def _normalize_host(host: str) -> str:
    # Accept "https://app.infisical.com/", and ".../api" as some SDKs document it.
    host = (host or DEFAULT_HOST).strip().rstrip("/").removesuffix("/api")
    url = httpx.URL(host)
    if url.scheme != "https" and url.host not in ("localhost", "127.0.0.1", "::1"):
        # Allowed for a self-hosted Infisical on a private network, but worth a line in the log.
        logger.warning("INFISICAL_HOST is not https: credentials and the token travel unencrypted")
    return host


@functools.cache
def _tls_context() -> ssl.SSLContext:
    # Loading the CA bundle takes ~70 ms: do it once per process, not once per store.
    # httpx honours SSL_CERT_FILE / SSL_CERT_DIR here (self-hosted Infisical with a private CA).
    return httpx.create_ssl_context()


def _token_rejected(response: httpx.Response) -> bool:
    """Infisical answers 401 for a revoked token and 403 ``TokenError`` for an expired JWT."""
    if response.status_code == 401:
        return True
    return response.status_code == 403 and _json(response).get("error") == "TokenError"


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
