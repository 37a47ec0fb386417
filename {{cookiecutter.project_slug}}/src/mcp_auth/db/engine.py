"""One database handle: engine, pool, error mapping and the thread hop for async callers.

SQLAlchemy Core runs synchronously; every async entry point sends its whole unit of work to a
worker thread in one hop (``Database.run``), so the event loop never blocks on the network and
a request costs one thread switch however many statements it issues. Any driver failure leaves
this module as ``ServiceUnavailable`` with a fixed message (never a DSN, host or password).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio.to_thread
from mcp_auth.audit import KEYED_LOG_MESSAGE
from mcp_auth.errors import ConfigError, ServiceUnavailable
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

T = TypeVar("T")

logger = logging.getLogger("mcp_auth.db")

# The contract: pool min 2, max 10 on PostgreSQL. SQLAlchemy closes "overflow"
# connections the moment they are returned, so pool_size=2 + max_overflow=8 would start and tear
# down a PostgreSQL backend (milliseconds each) for every request beyond two concurrent ones
# (measured at 8 concurrent callers: store.get p50 ~20 ms with that churn, ~6 ms without). So all
# 10 are kept once opened, and the start-up schema check (migrations.require_schema) opens the
# minimum of 2.
POOL_MIN = 2
POOL_MAX = 10
CONNECT_TIMEOUT_SECONDS = 3
POOL_TIMEOUT_SECONDS = 5
REQUEST_DEADLINE_SECONDS = 1.8
"""How long work on a request's path (a token hand-out, an API-key check, /status) may take before
the caller gets a 503: a database that hangs (rather than refusing connections) must not hang the
request; the contract is a 503 within 2 s."""
# Server-side idle timeouts and load balancers drop old connections; recycle before they do.
POOL_RECYCLE_SECONDS = 1800
# A connection idle this long is pinged before use (see _ping_when_idle).
PING_IDLE_SECONDS = 2.0

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
    engine = create_engine(
        url,
        pool_size=POOL_MAX,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        pool_recycle=POOL_RECYCLE_SECONDS,
        # Reuse the most recent connection: under light load the others go idle (and get
        # pinged before their next use) instead of all being kept barely warm.
        pool_use_lifo=True,
        connect_args=connect_args,
    )
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """``pool_pre_ping``, but only for connections that sat idle for PING_IDLE_SECONDS.

    A connection killed while idle (PostgreSQL restart, failover, idle timeout) is found at
    checkout and replaced, so the service recovers by itself. Skipping the ping for a
    connection used moments ago saves a round trip plus its Python overhead on every request
    under load (about 0.5 ms per database call here). If such a connection did die, the call
    fails once, SQLAlchemy invalidates the whole pool, and read-only calls retry (Database.run).
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)  # absent: a brand-new connection
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception:
            alive = False
        if not alive:
            # The pool drops this connection and checks out a fresh one (SQLAlchemy's
            # documented "pessimistic disconnect handling" hook).
            raise DisconnectionError("connection was closed while idle")


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


@contextlib.contextmanager
def driver_errors(conn: Connection) -> Iterator[None]:
    """Driver errors as SQLAlchemy's (Database.run maps those to ServiceUnavailable) for the
    statements that go to the driver directly, past SQLAlchemy's per-call overhead."""
    dbapi_error = conn.dialect.loaded_dbapi.Error
    try:
        yield
    except dbapi_error as exc:
        raise DBAPIError.instance(None, None, exc, dbapi_error) from None


class Database:
    """The engine plus the policies every caller shares (thread hop, error mapping)."""

    def __init__(self, engine: Engine, *, slug: str = "mcp-server") -> None:
        self.engine = engine
        self.slug = slug
        self.is_postgres = engine.dialect.name == "postgresql"
        self.label = "PostgreSQL" if self.is_postgres else "database"

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

    def warm_up(self, connections: int = POOL_MIN) -> None:
        """Open ``connections`` pooled connections now (the contract's pool minimum)."""
        with contextlib.ExitStack() as stack:
            for _ in range(connections):
                stack.enter_context(self.engine.connect())

    # ----- running work --------------------------------------------------------------------

    async def run(
        self,
        work: Callable[[Connection], T],
        *,
        autocommit: bool = False,
        retry: bool = False,
        deadline: float | None = None,
    ) -> T:
        """Run ``work(connection)`` in one transaction on a worker thread.

        ``autocommit=True`` is for work whose statements each stand alone: on PostgreSQL they
        then skip the BEGIN and COMMIT round trips. ``retry=True`` is for idempotent work: it
        runs once more when the connection turned out to be dead (see _ping_when_idle).
        ``deadline``: seconds after which the caller gets ServiceUnavailable while the thread is
        left to finish (a thread cannot be interrupted; its work may still commit later).
        """
        call = functools.partial(self.run_sync, work, autocommit=autocommit, retry=retry)
        if deadline is None:
            return await anyio.to_thread.run_sync(call)
        try:
            with anyio.fail_after(deadline):
                return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
        except TimeoutError:
            logger.warning("%s did not answer within %.1f s", self.label, deadline)
            raise ServiceUnavailable(f"{self.label} did not answer within {deadline:g} s") from None

    def run_sync(self, work: Callable[[Connection], T], *, autocommit: bool = False, retry: bool = False) -> T:
        try:
            try:
                return self._attempt(work, autocommit)
            except DBAPIError as exc:
                if not (retry and exc.connection_invalidated):
                    raise
                logger.info("retrying on a fresh connection after a disconnect")
                return self._attempt(work, autocommit)
        except SQLAlchemyError as exc:
            raise self.unavailable(exc) from None

    def _attempt(self, work: Callable[[Connection], T], autocommit: bool) -> T:
        with self.engine.connect() as conn:
            if autocommit and self.is_postgres:
                conn.execution_options(isolation_level="AUTOCOMMIT")
                return work(conn)
            with conn.begin():
                return work(conn)

    def unavailable(self, exc: SQLAlchemyError) -> ServiceUnavailable:
        """The user-facing 503 for a driver error; the cause goes to the log, not the message."""
        if isinstance(exc, PoolTimeout):
            message = f"{self.label} connection pool exhausted"
        elif getattr(getattr(exc, "orig", None), "sqlstate", None) == "MC001":  # the chain trigger (0002)
            message = KEYED_LOG_MESSAGE
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
        await self.run(
            lambda conn: conn.execute(text("SELECT 1")).scalar_one(),
            autocommit=True,
            retry=True,
            deadline=REQUEST_DEADLINE_SECONDS,
        )

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
