"""Leak scan ("Trust under attack"): one session through every store and every error path, then a
search for every secret in everything an operator or a caller could ever see.

Exercised: the env, PostgreSQL (with a password in its URL: trust auth ignores it, but it must
never appear), SQLite and Infisical stores; a wrong bearer token, an invalid JWT, a missing token
(503), the database down (503), the JWKS down (503), Infisical down and a wrong client secret
(503), a wrong encryption key; the operator CLI (tokens set/get/list/rotate-key, keys
create/list/revoke, audit list/verify, and its error paths); a real ``serve`` process.
Captured: every log line (JSON, through mcp_auth's redacting filter, at DEBUG), every HTTP status,
header and body, every CLI output (except the two outputs whose job is to print a secret: ``tokens
get`` and ``keys create`` on stdout), every column of every row of every table, and the command
line and output of the server process.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from mcp_auth.cli import build_cli
from mcp_auth.config import ProjectInfo, load_settings
from mcp_auth.crypto import generate_key
from mcp_auth.db import Database
from mcp_auth.errors import McpAuthError
from mcp_auth.logs import JsonFormatter, RedactingFilter
from mcp_auth.testing.clients import MCP_HEADERS, jsonrpc, running
from mcp_auth.testing.cloudflare import FakeCloudflareAccess
from mcp_auth.testing.infisical import FakeInfisical
from mcp_auth.testing.loopback import LoopbackServer
from mcp_auth.testing.plugin import AppFactory
from mcp_auth.testing.processes import free_port, start_console_script, wait_healthy
from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from starlette.applications import Starlette
from typer.testing import CliRunner

CLEARED = (
    "DATABASE_URL",
    "MCP_AUTH_ENCRYPTION_KEY",
    "MCP_AUTH_PREVIOUS_KEYS",
    "MCP_AUTH_MODE",
    "MCP_TOKEN_STORE",
    "MCP_BEARER_TOKENS",
    "MCP_AUDIT_KEY",
    "INFISICAL_CLIENT_SECRET",
    "INFISICAL_API_KEY",
)


def _secret(label: str) -> str:
    return f"leak-{label}-{secrets.token_hex(12)}"


@dataclass
class Secrets:
    upstream_env: str = field(default_factory=lambda: _secret("upstream-env"))
    upstream_db: str = field(default_factory=lambda: _secret("upstream-db"))
    upstream_own: str = field(default_factory=lambda: _secret("upstream-own"))
    upstream_sqlite: str = field(default_factory=lambda: _secret("upstream-sqlite"))
    upstream_infisical: str = field(default_factory=lambda: _secret("upstream-inf"))
    key_old: str = field(default_factory=generate_key)
    key_new: str = field(default_factory=generate_key)
    key_wrong: str = field(default_factory=generate_key)
    bearer: str = field(default_factory=lambda: _secret("bearer"))
    db_password: str = field(default_factory=lambda: _secret("dbpw"))
    infisical_client_secret: str = field(default_factory=lambda: _secret("inf-client-secret"))
    extra: list[str] = field(default_factory=list)
    """Secrets only known during the session: API keys, JWTs, Infisical access tokens."""

    def needles(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for name, value in vars(self).items():
            values = value if isinstance(value, list) else [value]
            for index, item in enumerate(values):
                label = f"{name}[{index}]" if isinstance(value, list) else name
                found[label] = item
                if name.startswith("key_"):
                    raw = base64.b64decode(item)
                    found[label + " (hex)"] = raw.hex()
                    found[label + " (urlsafe)"] = base64.urlsafe_b64encode(raw).decode().rstrip("=")
                if "." in item and item.count(".") == 2:  # a JWT: its signature alone is enough to replay nothing, but
                    found[label + " (signature)"] = item.rsplit(".", 1)[1]  # it should never be printed either
                quoted = quote(item, safe="")
                if quoted != item:
                    found[label + " (percent-encoded)"] = quoted
        return found


@dataclass
class Capture:
    """Everything an operator or caller could see, as (where, text) pairs."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    log: io.StringIO = field(default_factory=io.StringIO)

    def add(self, where: str, text: str | bytes) -> None:
        self.seen.append((where, text.decode("utf-8", "replace") if isinstance(text, bytes) else text))

    def response(self, where: str, response: httpx.Response) -> httpx.Response:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
        self.add(f"{where}: HTTP {response.status_code}", f"{headers}\n\n{response.text}")
        return response


@pytest.fixture
def capture() -> Iterator[Capture]:
    """Every log record of the session through mcp_auth's own formatter and redaction, at DEBUG."""
    captured = Capture()
    handler = logging.StreamHandler(captured.log)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield captured
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture
def upstream() -> Iterator[LoopbackServer]:
    """The upstream API the example tool calls: answers without echoing what it received."""
    server = LoopbackServer(lambda method, path, headers, body: (200, {"ok": True})).start()
    yield server
    server.stop()


def with_password(url: str, password: str) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


def dump_tables(url: str) -> str:
    """Every column of every row of every table, as text."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        lines: list[str] = []
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                for row in conn.execute(select(table)):
                    lines.append(f"{table.name}: {row._mapping!r}")
                    lines.extend(
                        value.decode("latin-1") if isinstance(value, (bytes, memoryview)) else str(value)
                        for value in (bytes(v) if isinstance(v, memoryview) else v for v in row)
                        if isinstance(value, (bytes, str))
                    )
        return "\n".join(lines)
    finally:
        engine.dispose()


class Operator:
    """The CLI, in-process, with an operator's environment."""

    def __init__(self, project: ProjectInfo, capture: Capture, base_env: dict[str, str]) -> None:
        self.cli = build_cli(project, f"{project.package}.app:create_app")
        self.capture = capture
        self.base_env = base_env
        self.argv: list[list[str]] = []

    def __call__(
        self, *args: str, input: str | None = None, expect: int = 0, secret_stdout: bool = False, **env: str
    ) -> str:
        environment: dict[str, str | None] = dict.fromkeys(CLEARED)
        environment.update({**self.base_env, **env})
        result = CliRunner().invoke(self.cli, list(args), input=input, env=environment)
        self.argv.append(list(args))
        where = f"cli {' '.join(args)}"
        if not secret_stdout:
            self.capture.add(f"{where} (stdout)", result.stdout)
        self.capture.add(f"{where} (stderr)", result.stderr)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            self.capture.add(f"{where} (exception)", repr(result.exception))
        assert result.exit_code == expect, (args, result.stdout if not secret_stdout else "", result.stderr)
        return result.stdout


def tool_call(name: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return jsonrpc("tools/call", {"name": name, "arguments": arguments or {}})


async def exercise(
    where: str, app: Starlette, capture: Capture, calls: list[tuple[str, dict[str, str], int | None]]
) -> None:
    """Run the app and send each (label, headers, expected status) tools/call, then /status and /health."""
    async with running(app) as http:
        for label, headers, expected in calls:
            response = capture.response(
                f"{where} {label}",
                await http.post(
                    "/mcp", json=tool_call("upstream_get", {"path": "/whoami"}), headers={**MCP_HEADERS, **headers}
                ),
            )
            if expected is not None:
                assert response.status_code == expected, (where, label, response.status_code, response.text)
        capture.response(
            f"{where} tools/list",
            await http.post(
                "/mcp", json=jsonrpc("tools/list"), headers={**MCP_HEADERS, **(calls[0][1] if calls else {})}
            ),
        )
        capture.response(f"{where} /status", await http.get("/status"))
        capture.response(f"{where} /health", await http.get("/health"))


def test_no_secret_leaks_anywhere(
    project: ProjectInfo,
    create_app: AppFactory,
    database_url: str,
    postgres_database: Database,  # empties the run's database first: its rotation covers every row
    sqlite_url: str,
    cf_access: FakeCloudflareAccess,
    capture: Capture,
    upstream: LoopbackServer,
    token_functions_state: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s = Secrets()
    service, env_name = project.service_name, project.service_token_env
    pg_url = with_password(database_url, s.db_password)
    down_url = with_password("postgresql://postgres@127.0.0.1:1/mcp_auth_down", s.db_password)
    monkeypatch.setenv("UPSTREAM_BASE_URL", upstream.url)
    operator = "ops@example.com"
    valid_jwt = cf_access.mint(email="alice@example.com")
    invalid_jwt = cf_access.mint(email="alice@example.com", aud=["other-app"])
    s.extra += [valid_jwt, invalid_jwt]

    # ----- a real server process (PostgreSQL store): started first (slow to import), queried last ---
    port = free_port()
    server_env = {
        "MCP_HOST": "127.0.0.1",
        "MCP_PORT": str(port),
        "MCP_AUTH_MODE": "both",
        "MCP_TOKEN_STORE": "postgres",
        "DATABASE_URL": pg_url,
        "MCP_AUTH_ENCRYPTION_KEY": s.key_new,
        "MCP_AUTH_PREVIOUS_KEYS": s.key_old,
        "MCP_BEARER_TOKENS": f"ci-bot={s.bearer}",
        "UPSTREAM_BASE_URL": upstream.url,
        **cf_access.env(),
    }
    server = start_console_script(project, "serve", env=server_env)
    try:
        # ----- the operator CLI on PostgreSQL and SQLite ----------------------------------------
        cli = Operator(
            project,
            capture,
            {"DATABASE_URL": pg_url, "MCP_AUTH_ENCRYPTION_KEY": s.key_old, "MCP_OPERATOR_EMAIL": operator},
        )
        cli("tokens", "set", service, "default", input=s.upstream_db + "\n")
        cli("tokens", "set", service, "alice@example.com", input=s.upstream_own + "\n")
        assert cli("tokens", "get", service, "default", secret_stdout=True).strip() == s.upstream_db
        cli("tokens", "list")
        api_key = cli("keys", "create", "--email", "robot@example.com", secret_stdout=True).strip()
        doomed = cli("keys", "create", "--email", "doomed@example.com", secret_stdout=True).strip()
        s.extra += [api_key, doomed]
        cli("keys", "list")
        doomed_id = next(line.split()[0] for line in cli("keys", "list").splitlines() if "doomed@example.com" in line)
        cli("keys", "revoke", doomed_id)
        cli("tokens", "rotate-key", MCP_AUTH_ENCRYPTION_KEY=s.key_new, MCP_AUTH_PREVIOUS_KEYS=s.key_old)
        cli("tokens", "get", service, "default", expect=1)  # the old key alone no longer opens the rows
        cli("tokens", "get", service, "default", expect=1, MCP_AUTH_ENCRYPTION_KEY=s.key_wrong)
        cli("tokens", "list", expect=1, DATABASE_URL=down_url)
        cli("tokens", "set", service, "default", input="x\n", expect=1, DATABASE_URL=down_url)
        cli("tokens", "get", service, "default", expect=1, MCP_AUTH_ENCRYPTION_KEY="not-a-key")
        cli("audit", "list", MCP_AUTH_ENCRYPTION_KEY=s.key_new)
        cli("audit", "verify", MCP_AUTH_ENCRYPTION_KEY=s.key_new)
        sqlite_cli = Operator(
            project,
            capture,
            {"DATABASE_URL": sqlite_url, "MCP_AUTH_ENCRYPTION_KEY": s.key_new, "MCP_OPERATOR_EMAIL": operator},
        )
        sqlite_cli("tokens", "set", service, "default", input=s.upstream_sqlite + "\n")
        sqlite_cli("audit", "verify")

        # ----- in-process apps: every store and error path -----------------------------------
        bearer = {"Authorization": f"Bearer {s.bearer}"}
        base = {
            "MCP_AUTH_MODE": "both",
            "MCP_TOKEN_STORE": "env",  # explicit: the project's baked default may be another store
            "MCP_BEARER_TOKENS": f"ci-bot={s.bearer}",
            **cf_access.env(),
        }

        def app(**env: str) -> Starlette:
            return create_app(load_settings(project, environ={**base, **env}))

        credentials: list[tuple[str, dict[str, str], int | None]] = [
            ("bearer", bearer, 200),
            ("jwt", {"Cf-Access-Jwt-Assertion": valid_jwt}, 200),
            ("wrong bearer", {"Authorization": "Bearer wrong-" + s.bearer[::-1]}, 401),
            ("invalid jwt", {"Cf-Access-Jwt-Assertion": invalid_jwt}, 401),
            ("missing credential", {}, 401),
        ]

        async def stores() -> None:
            await exercise("env", app(**{env_name: s.upstream_env}), capture, credentials)
            await exercise("env, no token", app(), capture, [("bearer", bearer, 503)])
            db = {"DATABASE_URL": pg_url, "MCP_TOKEN_STORE": "postgres", "MCP_AUTH_ENCRYPTION_KEY": s.key_new}
            await exercise(
                "postgres",
                app(**db),
                capture,
                [
                    *credentials,
                    ("api key", {"Authorization": f"Bearer {api_key}"}, 200),
                    ("revoked key", {"Authorization": f"Bearer {doomed}"}, 401),
                ],
            )
            await exercise(
                "postgres, wrong key",
                app(**{**db, "MCP_AUTH_ENCRYPTION_KEY": s.key_wrong}),
                capture,
                [("bearer", bearer, None)],
            )
            await exercise(
                "postgres, down",
                app(**{**db, "DATABASE_URL": down_url}),
                capture,
                [("bearer", bearer, 503), ("api key", {"Authorization": f"Bearer {api_key}"}, 503)],
            )
            sqlite = {"DATABASE_URL": sqlite_url, "MCP_TOKEN_STORE": "postgres", "MCP_AUTH_ENCRYPTION_KEY": s.key_new}
            await exercise("sqlite", app(**sqlite), capture, [("bearer", bearer, 200)])
            cf_access.down = True
            fresh_jwt = cf_access.mint(email="bob@example.com")
            s.extra.append(fresh_jwt)
            await exercise(
                "jwks down",
                app(**{env_name: s.upstream_env}),
                capture,
                [("jwt", {"Cf-Access-Jwt-Assertion": fresh_jwt}, 503)],
            )
            cf_access.down = False
            with FakeInfisical(client_secret=s.infisical_client_secret, project_id="leak-project-7c1d") as fake:
                fake.set_secret(env_name, s.upstream_infisical, path="/leak/scan-path")
                inf = {
                    "MCP_TOKEN_STORE": "infisical",
                    "INFISICAL_HOST": fake.url,
                    "INFISICAL_CLIENT_ID": fake.client_id,
                    "INFISICAL_CLIENT_SECRET": s.infisical_client_secret,
                    "INFISICAL_PROJECT_ID": fake.project_id,
                    "INFISICAL_SECRET_PATH": "/leak/scan-path",
                }
                await exercise("infisical", app(**inf), capture, credentials)
                await exercise(
                    "infisical, wrong secret",
                    app(**{**inf, "INFISICAL_CLIENT_SECRET": "wrong-" + s.infisical_client_secret}),
                    capture,
                    [("bearer", bearer, 503)],
                )
                access_token = fake.issue_token()
                s.extra.append(access_token)
                api_inf = {k: v for k, v in inf.items() if k != "INFISICAL_CLIENT_SECRET"}
                await exercise(
                    "infisical, api key",
                    app(**api_inf, INFISICAL_API_KEY=access_token),
                    capture,
                    [("bearer", bearer, 200)],
                )
                fake.go_down()
                await exercise("infisical, down", app(**inf), capture, [("bearer", bearer, 503)])
                fake.come_up()
                s.extra += [
                    r.headers["authorization"].partition(" ")[2] for r in fake.requests if "authorization" in r.headers
                ]
                assert len(s.extra) > 6, "the Infisical store never presented an access token"
            for where, text in list(capture.seen):
                if "HTTP 503" in where or "/status" in where:
                    for detail in (
                        "127.0.0.1",
                        ":1/",
                        "leak-project-7c1d",
                        "/leak/scan-path",
                        "cdn-cgi",
                        "mcp_auth_down",
                    ):
                        assert detail not in text, f"{where} names a host, port, project id or path: {text}"

        asyncio.run(stores())

        # ----- the server process ------------------------------------------------------------
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, server)
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().replace(b"\x00", b" ")
        capture.add("serve command line", cmdline)
        capture.add("serve argv (as started)", " ".join(server.command))
        with httpx.Client(base_url=url, timeout=10) as http:
            for label, headers, expected in [*credentials, ("api key", {"Authorization": f"Bearer {api_key}"}, 200)]:
                response = http.post(
                    "/mcp", json=tool_call("upstream_get", {"path": "/whoami"}), headers={**MCP_HEADERS, **headers}
                )
                capture.response(f"serve {label}", response)
                assert expected is None or response.status_code == expected, (label, response.text)
            capture.response("serve /status", http.get("/status"))
    finally:
        capture.add("serve output", server.stop())

    # ----- persisted state -------------------------------------------------------------------
    capture.add("postgres tables", dump_tables(database_url))
    capture.add("sqlite tables", dump_tables(sqlite_url))
    capture.add("CLI command lines", json.dumps(cli.argv + sqlite_cli.argv))
    capture.add("log", capture.log.getvalue())
    try:
        load_settings(
            project,
            environ={"DATABASE_URL": down_url, "MCP_TOKEN_STORE": "postgres", "MCP_AUTH_ENCRYPTION_KEY": "nope"},
        ).validate_startup()
    except McpAuthError as exc:
        capture.add("start-up refusal", exc.message)

    # The session really went through the stores and error paths it claims to.
    log = capture.log.getvalue()
    assert "authentication rejected" in log
    assert any("HTTP 503" in where for where, _ in capture.seen)
    assert any(where.startswith("postgres tables") and "get_token" in text for where, text in capture.seen)

    leaks = [
        f"{name} in {where}" for name, needle in s.needles().items() for where, text in capture.seen if needle in text
    ]
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)
