"""Alembic as its users expect it: the real ``alembic`` command from the project root, with DATABASE_URL.

``alembic upgrade head`` applies mcp_auth's migrations, then yours; ``alembic current`` works;
``alembic revision --autogenerate`` sees a table added to your metadata and
nothing of mcp_auth's tables; ``<slug> db upgrade`` runs both histories and is idempotent. On a
fresh SQLite file and on a fresh PostgreSQL database. New revisions are written to a copy of
alembic/ in a temporary directory, never into the project.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mcp_auth.config import ProjectInfo
from mcp_auth.db import normalize_url
from mcp_auth.testing.processes import clean_environ, run_console_script
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[1]
ALEMBIC = str(Path(sys.executable).with_name("alembic"))
MCP_AUTH_TABLES = ("tokens", "audit_log", "api_keys", "retired_encryption_keys", "mcp_auth_alembic_version")


def alembic(*args: str, cwd: Path, url: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"DATABASE_URL": url, **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
    result = subprocess.run(
        [ALEMBIC, *args], cwd=cwd, env=clean_environ(env), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"alembic {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


def engine(url: str) -> Engine:
    return create_engine(normalize_url(url), poolclass=NullPool)


def tables(url: str) -> set[str]:
    with engine(url).connect() as conn:
        return set(inspect(conn).get_table_names())


def project_with_a_new_table(tmp_path: Path, table: str) -> Path:
    """A copy of the project's pyproject.toml and alembic/ whose metadata has one more table."""
    work = tmp_path / "work"
    work.mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", work / "pyproject.toml")
    shutil.copytree(ROOT / "alembic", work / "alembic", ignore=shutil.ignore_patterns("__pycache__"))
    configured = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["alembic"]["target_metadata"]
    module, _, attribute = configured.partition(":")
    (work / "models_plus.py").write_text(
        f"from sqlalchemy import Column, Integer, String, Table\n"
        f"from {module} import {attribute} as metadata\n\n"
        f'Table("{table}", metadata, Column("id", Integer, primary_key=True), Column("name", String(80)))\n'
    )
    pyproject = (work / "pyproject.toml").read_text()
    (work / "pyproject.toml").write_text(pyproject.replace(f'"{configured}"', '"models_plus:metadata"'))
    return work


def test_the_alembic_command_line(empty_postgres_url: str, tmp_path: Path, project: ProjectInfo) -> None:
    """The same session on SQLite and PostgreSQL, side by side (each command is a ~1 s process)."""
    backends = {"sqlite": f"sqlite:///{tmp_path / 'fresh.db'}", "postgres": empty_postgres_url}
    with ThreadPoolExecutor(max_workers=len(backends)) as pool:
        sessions = {name: pool.submit(session, url, tmp_path / name, project) for name, url in backends.items()}
    for name, future in sessions.items():
        error = future.exception()
        if error is not None:
            raise AssertionError(f"[{name}] {error}") from error


def session(fresh_url: str, tmp_path: Path, project: ProjectInfo) -> None:
    upgraded = alembic("upgrade", "head", cwd=ROOT, url=fresh_url)
    assert "Running upgrade  -> 0001" in upgraded.stderr, "mcp_auth's migrations ran first"
    assert set(MCP_AUTH_TABLES) | {"alembic_version"} <= tables(fresh_url)
    alembic("current", cwd=ROOT, url=fresh_url)

    env = {"DATABASE_URL": fresh_url}
    first = run_console_script(project, "db", "upgrade", env=env)
    second = run_console_script(project, "db", "upgrade", env=env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout and "project schema" in first.stdout

    table = "widgets"
    work = project_with_a_new_table(tmp_path, table)
    alembic("revision", "--autogenerate", "-m", "add widgets", cwd=work, url=fresh_url, pythonpath=work)
    (revision,) = (work / "alembic" / "versions").glob("*_add_widgets.py")
    script = revision.read_text()
    assert f'op.create_table(\n        "{table}"' in script
    assert "drop_table" in script and f'op.drop_table("{table}")' in script
    for name in MCP_AUTH_TABLES:
        assert name not in script, f"autogenerate proposed a change to mcp_auth's {name}"
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(revision)], capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout  # the post-write hooks fixed and formatted it

    alembic("upgrade", "head", cwd=work, url=fresh_url, pythonpath=work)
    assert table in tables(fresh_url)
    with engine(fresh_url).connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    assert f'revision: str = "{version}"' in script
