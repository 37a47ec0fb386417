"""The database: engine and pool, schema, migrations, and the repositories that live on it
(API keys, the audit log). Only deployments with DATABASE_URL import this package."""

from __future__ import annotations

from mcp_auth.config import McpAuthSettings
from mcp_auth.db.engine import Database, as_utc, normalize_url
from mcp_auth.errors import ConfigError

__all__ = ["Database", "as_utc", "normalize_url", "open_database"]


def open_database(settings: McpAuthSettings) -> Database:
    """The Database named by DATABASE_URL (not yet connected)."""
    if settings.database_url is None:
        raise ConfigError("DATABASE_URL is not set (e.g. postgresql://user:password@host:5432/db)")
    return Database.from_url(settings.database_url.get_secret_value(), slug=settings.slug)
