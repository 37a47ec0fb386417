"""Alembic environment for mcp_auth's tables (tokens, audit_log, api_keys).

Normally driven by ``<slug> db upgrade`` (mcp_auth.db.migrations), which hands over an open
connection. Running the ``alembic`` command directly works too: it reads DATABASE_URL.
"""

from __future__ import annotations

import os

from alembic import context
from mcp_auth.db.migrations import VERSION_TABLE
from mcp_auth.db.models import metadata
from sqlalchemy.engine import Connection

config = context.config


def _ours(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    # The project may keep its own tables in the same database; autogenerate must not touch them.
    return not (type_ == "table" and reflected and name not in metadata.tables)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_object=_ours,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from mcp_auth.db import Database

    database = Database.from_url(os.environ["DATABASE_URL"])
    try:
        with database.engine.begin() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        database.close()


def run_migrations_offline() -> None:
    from mcp_auth.db import normalize_url

    context.configure(
        url=normalize_url(os.environ["DATABASE_URL"]),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
