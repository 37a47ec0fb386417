"""The project's own Alembic environment, next to mcp_auth's.

Two histories share the database and never touch each other's files or version table:

- mcp_auth's tables: ``migrations/`` (template-owned), version table ``mcp_auth_alembic_version``;
- the project's tables: ``alembic/`` at the project root (the user's; ``cruft update`` leaves its
  ``versions/`` alone), Alembic's default version table ``alembic_version``, configured in
  pyproject.toml's ``[tool.alembic]`` so the ``alembic`` command works from the project root.

``alembic upgrade head`` runs the project's ``alembic/env.py``, which calls ``connection()``
here: it applies mcp_auth's migrations first, in the same transaction. ``<slug> db upgrade``
runs both too (``upgrade_all``), and finds the project's environment in the installed wheel
(``<package>/_alembic``, hatch force-include) or in the source tree.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from mcp_auth.db import models
from mcp_auth.db.engine import Database, normalize_url
from mcp_auth.db.migrations import PROJECT_VERSION_TABLE, VERSION_TABLE, upgrade_on
from mcp_auth.errors import ConfigError
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

TARGET_METADATA_OPTION = "target_metadata"
"""``[tool.alembic]`` key naming the project's MetaData, ``"package.module:attribute"``."""


@dataclass(frozen=True)
class Upgraded:
    """The revisions applied after ``upgrade_all``."""

    mcp_auth: set[str]
    project: set[str] | None
    """None: the project has no Alembic environment of its own."""


def find_environment(package: str) -> Path | None:
    """The project's Alembic environment: ``<package>/_alembic`` in a wheel, else the source
    tree's ``alembic/`` (next to ``src/``); None when there is none."""
    if not package:
        return None
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = Path(next(iter(spec.submodule_search_locations))).resolve()
    for candidate in (package_dir / "_alembic", package_dir.parent.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    return None


def project_config(environment: Path, connection: Connection | None = None) -> Config:
    """An Alembic Config for the project's environment, handing over ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(environment))
    config.attributes["connection"] = connection
    return config


def project_revisions(connection: Connection) -> set[str]:
    context = MigrationContext.configure(connection, opts={"version_table": PROJECT_VERSION_TABLE})
    return set(context.get_current_heads())


def upgrade_all(
    database: Database, *, environment: Path | None, then: Callable[[Connection], None] | None = None
) -> Upgraded:
    """mcp_auth's migrations, then the project's (when it has an environment), then ``then``:
    all in one transaction, so a failure anywhere leaves the database as it was."""
    try:
        with database.engine.begin() as conn:
            ours = upgrade_on(conn)
            theirs: set[str] | None = None
            if environment is not None:
                command.upgrade(project_config(environment, conn), "head")
                theirs = project_revisions(conn)
            if then is not None:
                then(conn)
            return Upgraded(ours, theirs)
    except SQLAlchemyError as exc:
        raise database.unavailable(exc) from None


# ---- helpers for the project's alembic/env.py ------------------------------------------------


def is_mcp_auth_table(name: str | None) -> bool:
    """mcp_auth's tables and version table: autogenerate must leave them to mcp_auth's history."""
    return name in models.metadata.tables or name == VERSION_TABLE


def target_metadata(config: Config) -> MetaData | None:
    """The MetaData named by ``[tool.alembic] target_metadata`` (None when not configured, as
    when ``db upgrade`` runs the environment: upgrading needs no metadata)."""
    spec = config.get_alembic_option(TARGET_METADATA_OPTION)
    if not spec:
        return None
    module_name, sep, attribute = str(spec).partition(":")
    if not sep or not module_name or not attribute:
        raise CommandError(f'{TARGET_METADATA_OPTION} = "{spec}" is not "package.module:attribute"')
    found: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    if not isinstance(found, MetaData):
        raise CommandError(f"{TARGET_METADATA_OPTION} = {spec!r} is a {type(found).__name__}, not a MetaData")
    return found


def database_url() -> str:
    """DATABASE_URL with the driver we ship (for offline ``--sql`` runs)."""
    raw = os.environ.get("DATABASE_URL", "").strip()
    if not raw:
        raise CommandError("DATABASE_URL is not set (e.g. postgresql://user:password@host:5432/db)")
    try:
        return normalize_url(raw).render_as_string(hide_password=False)
    except ConfigError as exc:
        raise CommandError(exc.message) from None


def _is_upgrade(config: Config) -> bool:
    command_line: tuple[object, ...] = getattr(config.cmd_opts, "cmd", None) or ()  # argparse: (function, ...)
    return bool(command_line) and getattr(command_line[0], "__name__", "") == "upgrade"


@contextlib.contextmanager
def connection(config: Config) -> Iterator[Connection]:
    """The connection the project's env.py migrates on.

    From ``db upgrade``: the one it hands over (mcp_auth's migrations already ran on it).
    From the ``alembic`` command: a new one to DATABASE_URL, in one transaction, committed when
    the block ends; for ``alembic upgrade`` mcp_auth's migrations run on it first.
    """
    handed_over = config.attributes.get("connection")
    if handed_over is not None:
        yield handed_over
        return
    database = Database.from_url(database_url())
    try:
        with contextlib.ExitStack() as stack:
            try:
                conn = stack.enter_context(database.engine.begin())
                if _is_upgrade(config):
                    upgrade_on(conn)
            except SQLAlchemyError as exc:
                raise CommandError(database.unavailable(exc).message) from None
            yield conn  # the project's own migration errors reach Alembic untouched
    finally:
        database.close()
