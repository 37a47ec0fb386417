"""pytest fixtures for the database-backed parts of mcp_auth (and the project's own tests).

``database_url``: a fresh, migrated PostgreSQL database for the whole run, created next to the
server named by TEST_DATABASE_URL and dropped at the end. Without TEST_DATABASE_URL the tests
that need it are skipped locally, but fail when CI=true (a CI run that silently skipped every
PostgreSQL test would prove nothing).
``sqlite_url``: a migrated SQLite file in the test's tmp_path.
``postgres_database`` / ``sqlite_database``: a ``Database`` on those, emptied before each test.
``database``: both of them, parametrized (``[postgres]`` / ``[sqlite]``): a test taking it runs
once on each backend.
``empty_postgres_url``: a fresh PostgreSQL database with nothing in it (not migrated), for tests
of the migrations themselves; dropped after the test.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from mcp_auth.db import Database, migrations, normalize_url
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

__all__ = [
    "database",
    "database_url",
    "empty_postgres_url",
    "migrated_sqlite_template",
    "postgres_database",
    "sqlite_database",
    "sqlite_url",
]

SLUG = "demo-mcp"
_TABLES = "tokens, audit_log, api_keys, retired_encryption_keys"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _migrate(url: str) -> None:
    database = Database.from_url(url, slug=SLUG)
    try:
        migrations.upgrade(database)
    finally:
        database.close()


@contextlib.contextmanager
def _throwaway_database() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database next to TEST_DATABASE_URL; dropped on exit."""
    admin_url = os.environ.get("TEST_DATABASE_URL", "").strip()
    if not admin_url:
        reason = "TEST_DATABASE_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/postgres)"
        if _in_ci():
            pytest.fail(f"{reason}; CI must run the PostgreSQL tests", pytrace=False)
        pytest.skip(reason)
    url = normalize_url(admin_url)
    if url.get_backend_name() != "postgresql":
        pytest.fail("TEST_DATABASE_URL must be a PostgreSQL URL", pytrace=False)
    name = f"mcp_auth_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except SQLAlchemyError as exc:
        admin.dispose()
        orig = getattr(exc, "orig", exc)
        pytest.fail(f"TEST_DATABASE_URL: cannot create a test database ({type(orig).__name__})", pytrace=False)
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """URL of a migrated PostgreSQL database that exists only for this test run."""
    with _throwaway_database() as url:
        _migrate(url)
        yield url


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """URL of an empty PostgreSQL database (no tables) that exists only for this test."""
    with _throwaway_database() as url:
        yield url


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcp_auth_sqlite") / "template.db"
    _migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_url(migrated_sqlite_template: Path, tmp_path: Path) -> str:
    """URL of a migrated SQLite database file private to the test."""
    path = tmp_path / "mcp_auth.db"
    # Migrating once per run and copying the file keeps this fixture at file-copy speed.
    shutil.copyfile(migrated_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def postgres_database(database_url: str) -> Iterator[Database]:
    """A Database on the run's PostgreSQL database, with every mcp_auth table emptied."""
    database = Database.from_url(database_url, slug=SLUG)
    with database.engine.begin() as conn:
        # The owner's way past the TRUNCATE guard (migration 0002), for a fresh table per test.
        conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_truncate"))
        conn.execute(text(f"TRUNCATE {_TABLES} RESTART IDENTITY"))
        conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_truncate"))
    yield database
    database.close()


@pytest.fixture
def sqlite_database(sqlite_url: str) -> Iterator[Database]:
    database = Database.from_url(sqlite_url, slug=SLUG)
    yield database
    database.close()


@pytest.fixture(params=["postgres", "sqlite"])
def database(request: pytest.FixtureRequest) -> Database:
    """Each test that takes it runs twice: on ``postgres_database`` and on ``sqlite_database``."""
    found: Database = request.getfixturevalue(f"{request.param}_database")
    return found
