"""Everything the server needs, built once from validated settings at start-up."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcp_auth.audit import AuditSink, LogAuditSink
from mcp_auth.authentication import Authenticator
from mcp_auth.config import McpAuthSettings
from mcp_auth.errors import ServiceUnavailable
from mcp_auth.logs import register_secret
from mcp_auth.stores import TokenStore, build_store
from mcp_auth.token_access import TokenAccess
from mcp_auth.verifiers import CloudflareAccessVerifier, JwksCache, StaticBearerVerifier, Verifier

if TYPE_CHECKING:
    from mcp_auth.db import Database

logger = logging.getLogger("mcp_auth.runtime")


@dataclass
class Runtime:
    settings: McpAuthSettings
    authenticator: Authenticator
    store: TokenStore
    tokens: TokenAccess
    database: Database | None

    @classmethod
    def from_settings(cls, settings: McpAuthSettings) -> Runtime:
        """Validate (fail closed) and build; raises ConfigError naming the variable."""
        settings.validate_startup()
        _register_configured_secrets(settings)
        database = _open_database(settings)
        store = build_store(settings, database)
        audit = _audit_sink(database)
        # Tools calling mcp_auth.get_token() & co. share this store and audit log.
        from mcp_auth import api

        api.configure(store=store, audit=audit, actor=settings.operator)
        return cls(
            settings=settings,
            authenticator=_authenticator(settings, database),
            store=store,
            tokens=TokenAccess(
                store, audit, settings.service_name, fused_audit=database is not None and store.name == "postgres"
            ),
            database=database,
        )

    async def check(self) -> None:
        """Readiness: the token store (and database, when there is one) answers."""
        if self.database is not None and self.store.name != "postgres":
            await self.database.check()
        await self.store.check()

    async def close(self) -> None:
        await self.store.close()
        if self.database is not None:
            self.database.close()


def _open_database(settings: McpAuthSettings) -> Database | None:
    if not settings.uses_database:
        return None
    from mcp_auth.db import Database

    database = Database.from_settings(settings)
    try:
        database.require_schema()
    except ServiceUnavailable as exc:
        # Unreachable now is an outage (503 until it comes back), not a configuration error.
        logger.warning("database unreachable at start-up", extra={"reason": exc.message})
    return database


def _audit_sink(database: Database | None) -> AuditSink:
    if database is None:
        return LogAuditSink()
    from mcp_auth.audit import build_audit_sink

    return build_audit_sink(database)


def _authenticator(settings: McpAuthSettings, database: Database | None) -> Authenticator:
    cloudflare = None
    if settings.auth_mode in ("cloudflare", "both"):
        assert settings.cf_team_domain and settings.certs_url  # validate_startup() checked
        cloudflare = CloudflareAccessVerifier(
            team_domain=settings.cf_team_domain,
            audiences=settings.cf_audiences,
            jwks=JwksCache(settings.certs_url),
        )
    bearer: list[Verifier] = []
    static = StaticBearerVerifier(settings.static_bearer_tokens())
    if static:
        bearer.append(static)
    if database is not None:
        from mcp_auth.verifiers.api_key import ApiKeyVerifier

        bearer.append(ApiKeyVerifier(database))
    return Authenticator(settings.auth_mode, cloudflare=cloudflare, bearer=bearer)


def _register_configured_secrets(settings: McpAuthSettings) -> None:
    for secret in (
        settings.service_token,
        settings.encryption_key,
        settings.infisical_client_secret,
        settings.infisical_api_key,
        *settings.previous_keys,
    ):
        if secret is not None:
            register_secret(secret.get_secret_value())
    for token in settings.static_bearer_tokens():
        register_secret(token)
