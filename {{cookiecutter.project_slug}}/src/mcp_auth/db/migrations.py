"""Run mcp_auth's Alembic migrations from code (no alembic.ini needed).

The scripts live in ``<project>/migrations`` in a source checkout and are packaged into the wheel
as ``mcp_auth/_migrations`` (hatch force-include), so the locator looks there first.
mcp_auth keeps its own version table so a project can run its own Alembic history in the same
database without the two fighting over ``alembic_version``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from mcp_auth.db.engine import Database
from mcp_auth.errors import ConfigError
from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

VERSION_TABLE = "mcp_auth_alembic_version"
# The project's own Alembic environment (alembic/ at the project root) keeps Alembic's default.
PROJECT_VERSION_TABLE = "alembic_version"
# Two replicas running `db upgrade` at once must not both apply a migration.
_MIGRATION_LOCK = 0x6D63705F6D696772  # "mcp_migr"

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # mcp_auth/


def migrations_dir() -> Path:
    """``mcp_auth/_migrations`` (installed wheel), else ``<repo root>/migrations`` (source tree)."""
    candidates = [_PACKAGE_DIR / "_migrations", _PACKAGE_DIR.parent.parent / "migrations"]
    for candidate in candidates:
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigError("mcp_auth migrations not found (reinstall the package: migrations/ must be included)")


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # Passed as an object, never as sqlalchemy.url: configparser would mangle '%' in passwords.
    config.attributes["connection"] = connection
    config.attributes["version_table"] = VERSION_TABLE
    return config


def head_revisions() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def current_revisions(connection: Connection) -> set[str]:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return set(context.get_current_heads())


def upgrade(database: Database, revision: str = "head") -> set[str]:
    """Apply migrations up to ``revision`` in one transaction; returns the revisions now applied.

    Driver failures become ServiceUnavailable (same message as every other database call).
    """
    try:
        with database.engine.begin() as conn:
            return upgrade_on(conn, revision)
    except SQLAlchemyError as exc:
        raise database.unavailable(exc) from None


def upgrade_on(conn: Connection, revision: str = "head") -> set[str]:
    """Apply mcp_auth's migrations on ``conn`` (inside its transaction), under the migration lock.

    Safe to call from inside another Alembic environment's env.py (the project's own, when
    ``alembic upgrade`` runs it): Alembic's ``context`` module is one process-wide proxy, which a
    nested run would leave uninstalled, so the outer environment's proxy is put back afterwards.
    """
    import alembic.context

    outer = getattr(alembic.context, "_proxy", None)
    try:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
        command.upgrade(alembic_config(conn), revision)
    finally:
        if outer is not None:
            outer._install_proxy()
    return current_revisions(conn)


def require_schema(database: Database) -> None:
    """ConfigError unless the Alembic head is applied; ServiceUnavailable when unreachable.

    Also opens the pool's minimum of connections (the start-up check is their first use).
    """
    try:
        database.warm_up()
        with database.engine.connect() as conn:
            current = current_revisions(conn)
    except SQLAlchemyError as exc:
        raise database.unavailable(exc) from None
    if current != head_revisions():
        raise ConfigError(database.outdated_schema_message)
