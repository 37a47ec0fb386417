"""One database handle: engine, pool, error mapping and the thread hop for async callers.

SQLAlchemy Core runs synchronously; every async entry point sends its whole unit of work to a
worker thread in one hop (``Database.run``), so the event loop never blocks on the network and
a request costs one thread switch however many statements it issues. Any driver failure leaves
this module as ``ServiceUnavailable`` with a fixed message (never a DSN, host or password).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import anyio.to_thread
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from mcp_auth.errors import ConfigError, ServiceUnavailable

if TYPE_CHECKING:
    from mcp_auth.config import McpAuthSettings

T = TypeVar("T")

logger = logging.getLogger("mcp_auth.db")

# DESIGN.md section 4: pool min 2, max 10 on PostgreSQL.
POOL_SIZE = 2
MAX_OVERFLOW = 8
CONNECT_TIMEOUT_SECONDS = 3
POOL_TIMEOUT_SECONDS = 5
# Server-side idle timeouts and load balancers drop old connections; recycle before they do.
POOL_RECYCLE_SECONDS = 1800

_URL_HELP = "postgresql://user:password@host:5432/db or sqlite:///path/to/file.db"


def normalize_url(raw: str) -> URL:
    """Parse DATABASE_URL; PostgreSQL always goes through psycopg 3 (the driver we ship)."""
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):
        raise ConfigError(f"DATABASE_URL is not a valid database URL ({_URL_HELP})") from None
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            # Each pooled connection would get its own empty in-memory database.
            raise ConfigError("DATABASE_URL: in-memory SQLite is not supported; use sqlite:///path/to/file.db")
        return url.set(drivername="sqlite")
    raise ConfigError(f"DATABASE_URL must be a PostgreSQL or SQLite URL ({_URL_HELP})")


def _postgres_engine(url: URL, slug: str) -> Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    if "application_name" not in url.query:
        connect_args["application_name"] = slug[:63]
    return create_engine(
        url,
        pool_size=POOL_SIZE,
        max_overflow=MAX_OVERFLOW,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        pool_recycle=POOL_RECYCLE_SECONDS,
        # A connection killed by a PostgreSQL restart is detected at checkout and replaced, so
        # the service recovers on its own once the database is back.
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def _sqlite_engine(url: URL) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 5})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so we can BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Take the write lock up front: writers (and the audit chain) are serialized by SQLite
        # itself, and a read-then-write transaction can never fail half-way with SQLITE_BUSY.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


class Database:
    """The engine plus the policies every caller shares (thread hop, error mapping)."""

    def __init__(self, engine: Engine, *, slug: str = "mcp-server") -> None:
        self.engine = engine
        self.slug = slug
        self.is_postgres = engine.dialect.name == "postgresql"
        self.label = "PostgreSQL" if self.is_postgres else "database"

    @classmethod
    def from_settings(cls, settings: McpAuthSettings) -> Database:
        if settings.database_url is None:
            raise ConfigError("DATABASE_URL is not set (e.g. postgresql://user:password@host:5432/db)")
        return cls.from_url(settings.database_url.get_secret_value(), slug=settings.slug)

    @classmethod
    def from_url(cls, raw_url: str, *, slug: str = "mcp-server") -> Database:
        url = normalize_url(raw_url)
        engine = _postgres_engine(url, slug) if url.get_backend_name() == "postgresql" else _sqlite_engine(url)
        return cls(engine, slug=slug)

    @property
    def unavailable_message(self) -> str:
        return f"{self.label} connection failed"

    @property
    def outdated_schema_message(self) -> str:
        return f"database schema is not up to date: run '{self.slug} db upgrade'"

    # ----- running work --------------------------------------------------------------------

    async def run(self, work: Callable[[Connection], T], *, autocommit: bool = False) -> T:
        """Run ``work(connection)`` in one transaction on a worker thread.

        ``autocommit=True`` is for work that issues a single statement: on PostgreSQL it then
        skips the BEGIN and COMMIT round trips (the statement is its own transaction).
        """
        return await anyio.to_thread.run_sync(functools.partial(self.run_sync, work, autocommit=autocommit))

    def run_sync(self, work: Callable[[Connection], T], *, autocommit: bool = False) -> T:
        try:
            with self.engine.connect() as conn:
                if autocommit and self.is_postgres:
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                    return work(conn)
                with conn.begin():
                    return work(conn)
        except SQLAlchemyError as exc:
            raise self.unavailable(exc) from None

    def unavailable(self, exc: SQLAlchemyError) -> ServiceUnavailable:
        """The user-facing 503 for a driver error; the cause goes to the log, not the message."""
        if isinstance(exc, PoolTimeout):
            message = f"{self.label} connection pool exhausted"
        elif _is_missing_table(exc):
            message = self.outdated_schema_message
        elif isinstance(exc, (OperationalError, InterfaceError)) or (
            isinstance(exc, DBAPIError) and exc.connection_invalidated
        ):
            message = self.unavailable_message
        else:
            message = f"{self.label} query failed"
        orig = exc.orig if isinstance(exc, DBAPIError) else exc
        # Only the driver's first line: SQLAlchemy's str() would add the SQL and its parameters.
        reason = (str(orig).strip().splitlines() or [""])[0]
        logger.warning("%s (%s: %s)", message, type(orig).__name__, reason)
        return ServiceUnavailable(message)

    async def check(self) -> None:
        """Readiness probe: one round trip, ServiceUnavailable when the database cannot answer."""
        await self.run(lambda conn: conn.execute(text("SELECT 1")).scalar_one(), autocommit=True)

    def require_schema(self) -> None:
        """ConfigError unless the Alembic head is applied; ServiceUnavailable when unreachable."""
        from mcp_auth import migrations  # Alembic is only needed for this start-up check

        try:
            with self.engine.connect() as conn:
                current = migrations.current_revisions(conn)
        except SQLAlchemyError as exc:
            raise self.unavailable(exc) from None
        if current != migrations.head_revisions():
            raise ConfigError(self.outdated_schema_message)

    def close(self) -> None:
        self.engine.dispose()


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything mcp_auth stores is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _is_missing_table(exc: SQLAlchemyError) -> bool:
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) == "42P01":  # PostgreSQL undefined_table
        return True
    return "no such table" in str(orig or "")
