"""Alembic environment for this project's own tables (yours to edit).

From the project root, with DATABASE_URL set (as for the server):

    alembic upgrade head                                  # mcp_auth's migrations, then yours
    alembic current
    alembic revision --autogenerate -m "add widgets"      # a new file in alembic/versions/

Your tables are declared in the MetaData that pyproject.toml's ``[tool.alembic] target_metadata``
names (``src/<package>/models.py``). mcp_auth's tables (tokens, audit_log, api_keys, ...) have their
own history in ``migrations/`` with the version table ``mcp_auth_alembic_version``; this one uses
Alembic's default ``alembic_version``, and autogenerate never proposes changes to mcp_auth's tables.
``<slug> db upgrade`` (the compose ``migrate`` service) runs both histories too, in one transaction.
"""

from __future__ import annotations

import logging

from alembic import context
from mcp_auth.db import project_migrations

config = context.config
target_metadata = project_migrations.target_metadata(config)

if config.cmd_opts is not None:  # the `alembic` command line: say what it does
    logging.basicConfig(format="%(levelname)-5.5s [%(name)s] %(message)s")
    logging.getLogger("alembic").setLevel(logging.INFO)


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Leave mcp_auth's tables to mcp_auth's migrations."""
    return not (type_ == "table" and project_migrations.is_mcp_auth_table(name))


def run_migrations_offline() -> None:
    """``alembic upgrade head --sql``: the SQL of your migrations only."""
    context.configure(
        url=project_migrations.database_url(),
        target_metadata=target_metadata,
        include_object=include_object,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    with project_migrations.connection(config) as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_object=include_object,
            # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
