"""Fixtures and pytest hooks only; the helpers they use live in baked.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
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


@pytest.fixture(scope="session")
def database_url() -> str:
    """The PostgreSQL server generated suites use; CI must provide it."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("TEST_DATABASE_URL is not set (CI needs PostgreSQL for the generated suites)")
        pytest.skip("TEST_DATABASE_URL is not set: no PostgreSQL to run the generated suites against")
    return url


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
