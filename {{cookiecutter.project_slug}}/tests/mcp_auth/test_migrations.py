"""Alembic migrations: apply on PostgreSQL and SQLite, match the models, schema check, locator."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from mcp_auth.db import Database, migrations, normalize_url, open_database
from mcp_auth.db.migrations import require_schema
from mcp_auth.db.models import api_keys, metadata
from mcp_auth.errors import ConfigError, ServiceUnavailable
from mcp_auth.testing.settings import make_settings
from sqlalchemy import func, inspect, select, update
from sqlalchemy.engine import Connection

TABLES = {"tokens", "audit_log", "api_keys", "retired_encryption_keys"}
HEAD = "0004"


def test_start_up_check_opens_the_minimum_pool(postgres_database: Database) -> None:
    require_schema(postgres_database)
    assert postgres_database.engine.pool.checkedin() == 2  # type: ignore[attr-defined]


def test_migrated_schema_matches_the_models(database: Database) -> None:
    with database.engine.connect() as conn:
        opts = {"compare_type": True, "version_table": migrations.VERSION_TABLE}
        context = MigrationContext.configure(conn, opts=opts)
        assert compare_metadata(context, metadata) == []
        assert TABLES <= set(inspect(conn).get_table_names())
        assert migrations.current_revisions(conn) == migrations.head_revisions()
    require_schema(database)


def test_head_is_0004() -> None:
    assert migrations.head_revisions() == {HEAD}


def api_key_columns(conn: Connection) -> set[str]:
    return {column["name"] for column in inspect(conn).get_columns("api_keys")}


def test_0003_api_key_scopes_downgrade_and_upgrade(database: Database) -> None:
    """Inside one transaction, rolled back: the run's PostgreSQL database stays at head."""
    from alembic import command

    with database.engine.connect() as conn, conn.begin() as transaction:
        insert = api_keys.insert().values(prefix="mcpk_x", email="bot@example.com")
        conn.execute(insert.values(key_hash="a" * 64, scopes="tools:read"))
        conn.execute(insert.values(key_hash="b" * 64))
        config = migrations.alembic_config(conn)
        # A scoped key would become unrestricted without the column: refused until revoked.
        with pytest.raises(RuntimeError, match=r"^unrevoked API keys with scopes \(ids 1\) would call every tool"):
            command.downgrade(config, "0002")
        conn.execute(update(api_keys).where(api_keys.c.id == 1).values(revoked_at=func.now()))
        command.downgrade(config, "0002")
        assert "scopes" not in api_key_columns(conn) and migrations.current_revisions(conn) == {"0002"}
        assert conn.execute(select(func.count()).select_from(api_keys)).scalar_one() == 2  # rows kept
        assert migrations.upgrade_on(conn) == {HEAD}
        assert "scopes" in api_key_columns(conn)
        assert conn.execute(select(api_keys.c.scopes).order_by(api_keys.c.id)).scalars().all() == [None, None]
        transaction.rollback()


def test_own_version_table_leaves_alembic_version_to_the_project(database: Database) -> None:
    with database.engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
    assert migrations.VERSION_TABLE in names and "alembic_version" not in names


def test_fresh_sqlite_needs_upgrade_then_passes(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite:///{tmp_path / 'fresh.db'}", slug="demo-mcp")
    try:
        with pytest.raises(ConfigError, match=r"^database schema is not up to date: run 'demo-mcp db upgrade'$"):
            require_schema(database)
        assert migrations.upgrade(database) == migrations.head_revisions()
        assert migrations.upgrade(database) == migrations.head_revisions()  # idempotent
        require_schema(database)
    finally:
        database.close()


def test_down_and_up_again(sqlite_database: Database) -> None:
    from alembic import command

    with sqlite_database.engine.begin() as conn:
        command.downgrade(migrations.alembic_config(conn), "base")
        assert not TABLES & set(inspect(conn).get_table_names())
    migrations.upgrade(sqlite_database)
    require_schema(sqlite_database)


def test_unreachable_database_is_unavailable_not_outdated() -> None:
    database = Database.from_url("postgresql://u:pw@127.0.0.1:1/db")
    try:
        with pytest.raises(ServiceUnavailable, match=r"^PostgreSQL connection failed$"):
            require_schema(database)
        with pytest.raises(ServiceUnavailable, match=r"^PostgreSQL connection failed$"):
            migrations.upgrade(database)
    finally:
        database.close()


def test_locator_prefers_the_packaged_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert migrations.migrations_dir().name == "migrations"  # source tree
    package = tmp_path / "site-packages" / "mcp_auth"
    (package / "_migrations").mkdir(parents=True)
    (package / "_migrations" / "env.py").write_text("")
    monkeypatch.setattr(migrations, "_PACKAGE_DIR", package)
    assert migrations.migrations_dir() == package / "_migrations"
    (package / "_migrations" / "env.py").unlink()
    with pytest.raises(ConfigError, match="migrations not found"):
        migrations.migrations_dir()


@pytest.mark.parametrize(
    ("raw", "driver"),
    [
        ("postgresql://u:p@db:5432/x", "postgresql+psycopg"),
        ("postgres://u:p@db/x", "postgresql+psycopg"),
        ("postgresql+psycopg://u:p@db/x", "postgresql+psycopg"),
        ("sqlite:///relative.db", "sqlite"),
    ],
)
def test_database_url_normalization(raw: str, driver: str) -> None:
    assert normalize_url(raw).drivername == driver


@pytest.mark.parametrize("raw", ["mysql://u:secret-pw@h/x", "not a url secret-pw", "sqlite://", "sqlite:///:memory:"])
def test_unusable_database_urls_are_config_errors(raw: str) -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL") as caught:
        normalize_url(raw)
    assert "secret-pw" not in caught.value.message


def test_pool_settings_and_missing_url() -> None:
    database = open_database(make_settings(DATABASE_URL="postgresql://u:p@127.0.0.1:1/x"))
    try:
        pool = database.engine.pool
        # Max 10, all kept (no connect/disconnect churn); idle ones are pinged before use.
        assert (pool.size(), pool._max_overflow) == (10, 0)  # type: ignore[attr-defined]
        assert database.engine.url.drivername == "postgresql+psycopg"
    finally:
        database.close()
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        open_database(make_settings())
