"""Everything the server needs, built once from validated settings at start-up."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mcp_auth.authenticator import Authenticator
from mcp_auth.backend import Backend, open_backend
from mcp_auth.config import McpAuthSettings
from mcp_auth.errors import ServiceUnavailable
from mcp_auth.logs import register_secret
from mcp_auth.observability.exporter import multiprocess_dir
from mcp_auth.ownership import require_own_copy
from mcp_auth.tokens import TokenService
from mcp_auth.verifiers import CloudflareAccessVerifier, JwksCache, StaticBearerVerifier, Verifier
from mcp_auth.verifiers.oidc import OidcVerifier

if TYPE_CHECKING:  # annotations only: importing it at run time would load SQLAlchemy
    from mcp_auth.db import Database

logger = logging.getLogger("mcp_auth.runtime")


STATUS_FAILURE_TTL = 5.0
"""Seconds a failed readiness check is answered from memory: /status is public, and each check
may log in to Infisical or open a database connection (a probe flood must not become a login flood)."""


@dataclass
class Runtime:
    settings: McpAuthSettings
    authenticator: Authenticator
    backend: Backend
    clock: Callable[[], float] = time.monotonic
    _failure: tuple[float, ServiceUnavailable] | None = field(default=None, init=False, repr=False)
    _privileges_checked: bool = field(default=False, init=False, repr=False)

    @property
    def tokens(self) -> TokenService:
        return self.backend.tokens

    @property
    def database(self) -> Database | None:
        return self.backend.database

    @classmethod
    def from_settings(cls, settings: McpAuthSettings) -> Runtime:
        """Validate (fail closed) and build; raises ConfigError naming the variable."""
        require_own_copy(settings.package)
        settings.validate_startup()
        multiprocess_dir()  # PROMETHEUS_MULTIPROC_DIR, when set, must be usable before any metric is written
        _register_configured_secrets(settings)
        backend = open_backend(settings, require_schema=True)
        if backend.database is not None and settings.audit_key is None:
            logger.warning(
                "MCP_AUDIT_KEY is not set: the audit chain is plain SHA-256, which shows changes only by "
                "someone who cannot also rewrite audit_log (set it to a key from the keygen command)"
            )
        return cls(settings=settings, authenticator=_authenticator(settings, backend.database), backend=backend)

    async def check(self) -> None:
        """Readiness: the token store (and database, when there is one) answers. A failure is
        logged with its detail and remembered for STATUS_FAILURE_TTL seconds."""
        if self._failure is not None and self.clock() - self._failure[0] < STATUS_FAILURE_TTL:
            raise self._failure[1]
        try:
            if self.database is not None and self.settings.token_store != "postgres":
                await self.database.check()  # the postgres store's own check already queries it
            await self.tokens.check()
        except ServiceUnavailable as exc:
            logger.warning("readiness check failed", extra={"reason": exc.log_detail})
            self._failure = (self.clock(), exc)
            raise
        self._failure = None
        await self._warn_about_privileges()

    async def _warn_about_privileges(self) -> None:
        """Once per process, on the first ready check: say in the log (never in the public body)
        when the server's database role could rewrite the audit log."""
        if self._privileges_checked or self.database is None:
            return
        from mcp_auth.db.roles import privilege_warning  # a database exists: the stack is loaded

        try:
            warning = await self.database.run(privilege_warning, autocommit=True, retry=True)
        except ServiceUnavailable:
            return  # checked again on the next ready check
        self._privileges_checked = True
        if warning is not None:
            logger.warning("database role has too many privileges", extra={"reason": warning})

    async def log_audit_checkpoint(self) -> None:
        """Log the audit chain's head (``ID:HASH``) as a JSON line, for a log store outside the
        database: ``audit verify --expect-head`` then detects rows cut from the end."""
        if self.backend.audit_head is None:
            return
        try:
            head = await self.backend.audit_head()
        except ServiceUnavailable as exc:
            logger.warning("audit checkpoint failed", extra={"reason": exc.log_detail})
            return
        if head is not None:
            logger.info("audit checkpoint", extra={"checkpoint": str(head)})

    async def close(self) -> None:
        await self.backend.close()


def _authenticator(settings: McpAuthSettings, database: Database | None) -> Authenticator:
    cloudflare = None
    if settings.auth_mode in ("cloudflare", "both"):
        assert settings.cf_team_domain and settings.certs_url  # validate_startup() checked
        cloudflare = CloudflareAccessVerifier(
            team_domain=settings.cf_team_domain,
            audiences=settings.cf_audiences,
            jwks=JwksCache(settings.certs_url),
            group_scopes=settings.group_scopes(),
        )
    bearer: list[Verifier] = []
    static = StaticBearerVerifier(settings.static_bearer_tokens(), settings.static_bearer_scopes())
    if static:
        bearer.append(static)
    if database is not None:
        from mcp_auth.verifiers.api_key import ApiKeyVerifier  # loads SQLAlchemy: only with a database

        bearer.append(ApiKeyVerifier(database))
    if settings.oidc_issuer is not None and settings.oidc_audience is not None:
        bearer.append(OidcVerifier(issuer=settings.oidc_issuer, audience=settings.oidc_audience))
    return Authenticator(settings.auth_mode, cloudflare=cloudflare, bearer=bearer)


def _register_configured_secrets(settings: McpAuthSettings) -> None:
    for secret in (
        settings.service_token,
        settings.encryption_key,
        settings.audit_key,
        settings.infisical_client_secret,
        settings.infisical_api_key,
        *settings.previous_keys,
    ):
        if secret is not None:
            register_secret(secret.get_secret_value())
    for token in settings.static_bearer_tokens():
        register_secret(token)
