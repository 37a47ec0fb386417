"""Template test helpers: bake a project and talk about it in sentences (has_file, run, install)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TEMPLATE = Path(__file__).resolve().parents[1]
MYPY_CACHE = Path(tempfile.gettempdir()) / f"mcp-template-mypy-cache-{os.getpid()}"
AUTH_MODES = ["both", "cloudflare", "bearer"]
TOKEN_STORES = ["env", "postgres", "infisical"]
COMBINATIONS = [(auth, store) for auth in AUTH_MODES for store in TOKEN_STORES]


def _uv_cache_dir() -> str | None:
    # Pinned at import: tests that fake HOME (cruft's git isolation) must not send uv to an empty cache.
    uv = shutil.which("uv")
    if uv is None:
        return None
    return subprocess.run([uv, "cache", "dir"], capture_output=True, text=True).stdout.strip() or None


UV_CACHE_DIR = os.environ.get("UV_CACHE_DIR") or _uv_cache_dir()

TIMINGS: list[str] = []
"""Wall times the slow tests measured; printed in the terminal summary (never asserted)."""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if TIMINGS:
        terminalreporter.section("measured wall times")
        for line in TIMINGS:
            terminalreporter.write_line(line)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell would have: none of the template venv's, none of our MCP vars."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "PYTHONPATH", "PYTEST_ADDOPTS"}
        and not k.startswith(("MCP_", "CF_ACCESS_", "INFISICAL_", "PYTEST_XDIST", "COV_"))
    }
    if UV_CACHE_DIR:
        env["UV_CACHE_DIR"] = UV_CACHE_DIR
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class BakedProject:
    path: Path
    context: dict[str, Any]

    @property
    def slug(self) -> str:
        return str(self.context["project_slug"])

    @property
    def package(self) -> str:
        return str(self.context["package_name"])

    def has_file(self, relative: str) -> bool:
        return (self.path / relative).is_file()

    def read(self, relative: str) -> str:
        return (self.path / relative).read_text()

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file() and ".venv" not in p.parts)

    def run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 300,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            list(args),
            cwd=self.path,
            env=clean_env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}\n--- stdout\n{result.stdout[-6000:]}"
                f"\n--- stderr\n{result.stderr[-6000:]}"
            )
        return result

    def install(self) -> float:
        """``uv sync --locked`` (fails if uv.lock does not match pyproject.toml); returns seconds.

        Bytecode is compiled at install, as the image does: this machine sets
        PYTHONDONTWRITEBYTECODE, so otherwise every process would recompile FastMCP (~3 s).
        """
        started = time.perf_counter()
        self.run("uv", "sync", "--locked", "--compile-bytecode", "--quiet")
        return time.perf_counter() - started

    def typecheck(self, mypy: Path | None = None) -> subprocess.CompletedProcess[str]:
        """mypy (strict, per the project's config) with a cache shared by every bake in the run."""
        command = [str(mypy)] if mypy else ["uv", "run", "--locked", "mypy"]
        return self.run(*command, env={"MYPY_CACHE_DIR": str(MYPY_CACHE)})

    def run_tests(self, *pytest_args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.run("uv", "run", "--locked", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args, env=env)

    def start_server(self, env: dict[str, str]) -> subprocess.Popen[str]:
        """Start the console script exactly as the image's CMD does."""
        return subprocess.Popen(
            [str(self.path / ".venv" / "bin" / self.slug), "serve"],
            cwd=self.path,
            env=clean_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


@pytest.fixture
def bake(cookies: Any) -> Callable[..., BakedProject]:
    def _bake(**context: str) -> BakedProject:
        result = cookies.bake(extra_context=context)
        assert result.exception is None, result.exception
        assert result.exit_code == 0
        return BakedProject(Path(result.project_path), dict(result.context))

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
    result = cookies_session.bake(extra_context={"project_name": "Typecheck Env"})
    assert result.exit_code == 0, result.exception
    project = BakedProject(Path(result.project_path), dict(result.context))
    project.install()
    return project.path / ".venv" / "bin"
