"""The console script as an operator runs it (a real process): secrets on stdin, one-line errors,
exit codes. Each command is tested in depth in-process in tests/mcp_auth/test_cli_vault.py."""

from __future__ import annotations

import base64
import subprocess
from typing import Protocol

import pytest
from mcp_auth.config import ProjectInfo
from mcp_auth.crypto import generate_key
from mcp_auth.testing.processes import run_console_script


class Cli(Protocol):
    def __call__(
        self, *args: str, env: dict[str, str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]: ...


@pytest.fixture
def cli(project: ProjectInfo) -> Cli:
    """``cli(*args, env=..., stdin=...)``: the console script with only ``env`` of mcp_auth's variables."""

    def run(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_console_script(project, *args, env=env, stdin=stdin)

    return run


def test_operator_session(cli: Cli, project: ProjectInfo, sqlite_url: str) -> None:
    # A migrated database (tests/test_alembic.py runs `db upgrade` as a real process).
    key = generate_key()
    env = {"DATABASE_URL": sqlite_url, "MCP_AUTH_ENCRYPTION_KEY": key, "MCP_OPERATOR_EMAIL": "ops@example.com"}
    secret = "operator-typed-secret-value-1"
    stored = cli("tokens", "set", project.service_name, "default", env=env, stdin=secret + "\n")
    assert stored.returncode == 0, stored.stderr
    assert secret not in stored.stdout + stored.stderr

    other_key = {**env, "MCP_AUTH_ENCRYPTION_KEY": base64.b64encode(b"k" * 32).decode()}
    wrong = cli("tokens", "get", project.service_name, "default", env=other_key)
    assert wrong.returncode == 1
    assert len(wrong.stderr.strip().splitlines()) == 1 and "Traceback" not in wrong.stderr
    assert "Invalid encryption key" in wrong.stderr and secret not in wrong.stderr

    got = cli("tokens", "get", project.service_name, "default", env=env)
    assert (got.returncode, got.stdout.strip()) == (0, secret)


def test_database_down_is_one_line_without_driver_details(cli: Cli) -> None:
    env = {"DATABASE_URL": "postgresql://app:db-password-123@127.0.0.1:1/app"}
    result = cli("tokens", "list", env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: PostgreSQL connection failed"]
    assert "db-password-123" not in result.stdout + result.stderr
