"""Everything the server needs, built once from validated settings at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcp_auth.authenticator import Authenticator
from mcp_auth.backend import Backend, open_backend
from mcp_auth.config import McpAuthSettings
from mcp_auth.logs import register_secret
from mcp_auth.ownership import require_own_copy
from mcp_auth.tokens import TokenService
from mcp_auth.verifiers import CloudflareAccessVerifier, JwksCache, StaticBearerVerifier, Verifier

if TYPE_CHECKING:  # annotations only: importing it at run time would load SQLAlchemy
    from mcp_auth.db import Database


@dataclass
class Runtime:
    settings: McpAuthSettings
    authenticator: Authenticator
    backend: Backend

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
        _register_configured_secrets(settings)
        backend = open_backend(settings, require_schema=True)
        return cls(settings=settings, authenticator=_authenticator(settings, backend.database), backend=backend)

    async def check(self) -> None:
        """Readiness: the token store (and database, when there is one) answers."""
        if self.database is not None and self.settings.token_store != "postgres":
            await self.database.check()  # the postgres store's own check already queries it
        await self.tokens.check()

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
        )
    bearer: list[Verifier] = []
    static = StaticBearerVerifier(settings.static_bearer_tokens())
    if static:
        bearer.append(static)
    if database is not None:
        from mcp_auth.verifiers.api_key import ApiKeyVerifier  # loads SQLAlchemy: only with a database

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
