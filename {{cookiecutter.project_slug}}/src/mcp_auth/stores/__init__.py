"""Token stores: env (phase 1), PostgreSQL/SQLite (phase 2), Infisical (phase 3).

Switching store is configuration only (``MCP_TOKEN_STORE``), the spec's migration path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp_auth.config import McpAuthSettings
from mcp_auth.errors import ConfigError
from mcp_auth.stores.base import DEFAULT_KEY, AuditedReads, RotatableStore, TokenStore
from mcp_auth.stores.env import EnvTokenStore

if TYPE_CHECKING:  # annotations only: importing it at run time would load SQLAlchemy
    from mcp_auth.db import Database

__all__ = ["DEFAULT_KEY", "AuditedReads", "EnvTokenStore", "RotatableStore", "TokenStore", "build_store"]


def build_store(settings: McpAuthSettings, database: Database | None) -> TokenStore:
    """The store named by MCP_TOKEN_STORE; imports only what that store needs."""
    if settings.token_store == "postgres":
        from mcp_auth.stores.database import DatabaseTokenStore

        if database is None:
            raise ConfigError("DATABASE_URL is required when MCP_TOKEN_STORE=postgres")
        return DatabaseTokenStore.from_settings(settings, database)
    if settings.token_store == "infisical":
        from mcp_auth.stores.infisical import InfisicalStore

        return InfisicalStore.from_settings(settings)
    token = settings.service_token.get_secret_value() if settings.service_token else None
    return EnvTokenStore(settings.service_name, settings.service_token_env, token)
