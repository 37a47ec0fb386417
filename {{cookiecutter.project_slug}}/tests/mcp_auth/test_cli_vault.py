"""Operator CLI (the contract in docs/architecture.md): db, tokens, keys, audit, driven through Typer's runner.

Exit codes: 0 ok; 1 user error with exactly one stderr line and no traceback; 2 usage.
The session test ends by scanning every column of every row of every table for secrets.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import typer
from mcp_auth.cli import audit, db, keys, tokens
from mcp_auth.cli.state import CliState
from mcp_auth.config import ProjectInfo
from mcp_auth.crypto import generate_key, key_id, parse_key
from mcp_auth.db import Database
from sqlalchemy import MetaData, select, text
from typer.testing import CliRunner, Result

PROJECT = ProjectInfo(slug="demo-mcp", service_name="demo", service_token_env="DEMO_API_TOKEN")
OPERATOR = "ops@example.com"
ENV_NAMES = (
    "DATABASE_URL",
    "MCP_AUTH_ENCRYPTION_KEY",
    "MCP_AUTH_PREVIOUS_KEYS",
    "MCP_OPERATOR_EMAIL",
    "DEMO_API_TOKEN",
    "MCP_TOKEN_STORE",
    "MCP_AUTH_MODE",
)


def build_cli() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = CliState(project=PROJECT, app_factory="unused:create_app")  # no `serve` here

    for name, module in (("tokens", tokens), ("keys", keys), ("audit", audit), ("db", db)):
        root.add_typer(module.app, name=name)
    return root


def kid(key: str) -> str:
    return key_id(parse_key(key, name="k"))


@dataclass
class Vault:
    """The CLI against one database, with the environment an operator would export."""

    url: str
    key: str = field(default_factory=generate_key)
    outputs: list[Result] = field(default_factory=list)
    cli: typer.Typer = field(default_factory=build_cli)

    def run(self, *args: str, input: str | None = None, **env: str | None) -> Result:
        environment: dict[str, str | None] = dict.fromkeys(ENV_NAMES)
        environment.update(
            {"DATABASE_URL": self.url, "MCP_AUTH_ENCRYPTION_KEY": self.key, "MCP_OPERATOR_EMAIL": OPERATOR}
        )
        environment.update(env)
        result = CliRunner().invoke(self.cli, list(args), input=input, env=environment)
        self.outputs.append(result)
        return result

    def ok(self, *args: str, input: str | None = None, **env: str | None) -> Result:
        result = self.run(*args, input=input, **env)
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return result

    def error(self, *args: str, input: str | None = None, **env: str | None) -> str:
        """Exit 1 with exactly one line on stderr and no traceback; returns that line."""
        result = self.run(*args, input=input, **env)
        assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
        assert "Traceback" not in result.output
        return result.stderr.strip()


@pytest.fixture
def pg(database_url: str, postgres_database: Database) -> Vault:
    return Vault(database_url)


@pytest.fixture
def lite(sqlite_url: str) -> Vault:
    return Vault(sqlite_url)


def test_operator_session_leaves_no_secret_anywhere(pg: Vault) -> None:
    token, env_token = "upstream-token-" + "a1b2c3d4e5f6", "env-token-" + "f6e5d4c3b2a1"
    first_key, second_key, third_key = pg.key, generate_key(), generate_key()

    assert pg.ok("db", "upgrade").stdout == "database schema at revision 0004 (head)\n"

    assert "stored demo/default" in pg.ok("tokens", "set", "demo", "default", input=token + "\n").stdout
    assert pg.ok("tokens", "get", "demo", "default").stdout == token + "\n"
    listing = pg.ok("tokens", "list").stdout
    assert "demo" in listing and "default" in listing and kid(first_key) in listing

    digest = hashlib.sha256(env_token.encode()).hexdigest()[:12]
    dry = pg.ok("tokens", "import-env", "--dry-run", DEMO_API_TOKEN=env_token).stdout
    assert "would replace demo/default" in dry and digest in dry and "nothing written" in dry
    assert pg.ok("tokens", "get", "demo", "default").stdout == token + "\n"
    imported = pg.ok("tokens", "import-env", DEMO_API_TOKEN=env_token).stdout
    assert "imported 1 token: DEMO_API_TOKEN -> demo/default (replaced)" in imported
    assert f"sha256 {digest} verified" in imported
    assert pg.ok("tokens", "get", "demo", "default").stdout == env_token + "\n"
    pg.ok("tokens", "set", "demo", "alice@example.com", input=token)

    # Roll-out rotation: new key current, old key previous.
    rotated = pg.ok("tokens", "rotate-key", MCP_AUTH_ENCRYPTION_KEY=second_key, MCP_AUTH_PREVIOUS_KEYS=first_key).stdout
    assert rotated.startswith(f"re-encrypted 2 tokens under key id {kid(second_key)} in ")
    pg.key = second_key
    assert pg.ok("tokens", "get", "demo", "default").stdout == env_token + "\n"
    # The spec's rotateKey(old, new): keys on stdin, env keys ignored (even unset).
    rotated = pg.ok(
        "tokens", "rotate-key", "--stdin", input=f"{second_key}\n{third_key}\n", MCP_AUTH_ENCRYPTION_KEY=None
    ).stdout
    assert rotated.startswith(f"re-encrypted 2 tokens under key id {kid(third_key)}")
    pg.key = third_key
    assert pg.ok("tokens", "get", "demo", "alice@example.com").stdout == token + "\n"

    created = pg.ok("keys", "create", "--email", "bot@example.com")
    api_key = created.stdout.strip()
    assert created.stdout == api_key + "\n" and api_key.startswith("mcpk_")
    assert created.stderr.startswith("API key id 1 for bot@example.com")
    key_list = pg.ok("keys", "list").stdout
    assert "bot@example.com" in key_list and api_key[:12] in key_list and api_key not in key_list
    assert pg.ok("keys", "revoke", "1").stdout == "revoked API key 1\n"
    assert pg.error("keys", "revoke", "42") == "error: no API key with id 42"

    assert pg.ok("tokens", "delete", "demo", "alice@example.com").stdout == "deleted demo/alice@example.com\n"
    assert pg.error("tokens", "delete", "demo", "alice@example.com") == (
        "error: no token stored for service 'demo', key 'alice@example.com'"
    )

    log = pg.ok("audit", "list", "--limit", "100").stdout
    for action in ("set_token", "get_token", "import_env", "rotate_key", "delete_token"):
        assert action in log
    assert OPERATOR in log
    verified = pg.ok("audit", "verify").stdout
    assert verified.startswith("audit chain intact: ") and " rows checked (ids 1 to " in verified

    # Nothing secret in any column of any row of any table ...
    secrets = [token, env_token, api_key, first_key, second_key, third_key]
    raw_keys = [base64.b64decode(k) for k in (first_key, second_key, third_key)]
    engine = Database.from_url(pg.url).engine
    try:
        tables = MetaData()
        tables.reflect(engine)
        assert {"tokens", "audit_log", "api_keys"} <= set(tables.tables)
        with engine.connect() as conn:
            for table in tables.sorted_tables:
                for row in conn.execute(select(table)):
                    for value in row:
                        blob = value if isinstance(value, bytes) else str(value).encode()
                        for raw in [s.encode() for s in secrets] + raw_keys:
                            assert raw not in blob, f"secret found in {table.name}"
    finally:
        engine.dispose()
    # ... nor in anything the CLI printed, except the two places that hand a value out.
    for result in pg.outputs:
        printed = result.stderr + (
            "" if result.stdout in (token + "\n", env_token + "\n", api_key + "\n") else result.stdout
        )
        for secret in secrets:
            assert secret not in printed


def test_audit_verify_names_the_first_broken_row(pg: Vault) -> None:
    for i in range(3):
        pg.ok("tokens", "set", "demo", f"user{i}", input=f"value-{i}")
    engine = Database.from_url(pg.url).engine
    try:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
            conn.execute(text("UPDATE audit_log SET user_email = 'someone-else' WHERE id = 2"))
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))
    finally:
        engine.dispose()
    assert pg.error("audit", "verify").startswith("error: audit chain broken at row 2")


def test_decryption_failure_names_the_key_id(lite: Vault) -> None:
    written_with = lite.key
    lite.ok("tokens", "set", "demo", "default", input="v")
    message = lite.error("tokens", "get", "demo", "default", MCP_AUTH_ENCRYPTION_KEY=generate_key())
    assert message.startswith(
        f"error: Invalid encryption key: token demo/default was encrypted with key id {kid(written_with)}"
    )
    stray = lite.error("tokens", "rotate-key", MCP_AUTH_ENCRYPTION_KEY=generate_key())
    assert f"key id {kid(written_with)}" in stray and "nothing was re-encrypted" in stray


@pytest.mark.parametrize(
    ("args", "env", "stdin", "expected"),
    [
        (("tokens", "list"), {"DATABASE_URL": None}, None, "error: DATABASE_URL is not set"),
        (("tokens", "set", "demo", "default"), {}, "", "error: no token value on stdin"),
        (
            ("tokens", "set", "demo", "default"),
            {"MCP_AUTH_ENCRYPTION_KEY": "short"},
            "v",
            "error: MCP_AUTH_ENCRYPTION_KEY is not a base64-encoded 32-byte key (generate one with 'demo-mcp keygen')",
        ),
        (
            ("tokens", "get", "demo", "nope"),
            {},
            None,
            "error: no token stored for service 'demo', key 'nope'",
        ),
        (
            ("tokens", "rotate-key", "--stdin"),
            {},
            "only-one-line\n",
            "error: --stdin expects exactly two lines",
        ),
        (
            ("tokens", "rotate-key", "--stdin"),
            {},
            "bad\nworse\n",
            "error: the new key (line 2) is not a base64",
        ),
        (("tokens", "import-env"), {}, None, "error: DEMO_API_TOKEN is not set: there is no token to import"),
        (("keys", "create", "--email", "nobody"), {}, None, "error: --email must be an email address"),
        (
            ("tokens", "list"),
            {"DATABASE_URL": "postgresql://u:pw-123@127.0.0.1:1/x"},
            None,
            "error: PostgreSQL connection failed",
        ),
        (("audit", "list"), {"DATABASE_URL": "mysql://u:pw-123@h/x"}, None, "error: DATABASE_URL must be"),
    ],
)
def test_user_errors_are_one_line(
    lite: Vault, args: tuple[str, ...], env: dict[str, str | None], stdin: str | None, expected: str
) -> None:
    message = lite.error(*args, input=stdin, **env)
    assert message.startswith(expected)
    assert "pw-123" not in message


def test_outdated_schema_says_to_upgrade(tmp_path: Path) -> None:
    vault = Vault(f"sqlite:///{tmp_path / 'new.db'}")
    assert vault.error("tokens", "list") == "error: database schema is not up to date: run 'demo-mcp db upgrade'"
    vault.ok("db", "upgrade")
    assert vault.ok("tokens", "list").stderr == "no tokens stored\n"


@pytest.mark.parametrize("args", [("tokens", "set", "demo"), ("tokens", "frobnicate"), ("keys", "revoke", "x")])
def test_usage_errors_exit_2(lite: Vault, args: tuple[str, ...]) -> None:
    assert lite.run(*args).exit_code == 2


def test_key_expiry_option(lite: Vault) -> None:
    created = lite.ok("keys", "create", "--email", "bot@example.com", "--expires-in-days", "7")
    assert "expires 20" in created.stderr
    assert lite.ok("audit", "list").stderr == "the audit log is empty\n"


def test_keys_with_scopes(lite: Vault) -> None:
    bad = lite.error("keys", "create", "--email", "bot@example.com", "--scope", "tools:read", "--scope", 'say"hi"')
    assert bad == (
        "error: --scope: invalid scope 'say\"hi\"': a scope is one or more printable ASCII characters "
        "without spaces, double quotes or backslashes"
    )
    assert lite.ok("keys", "list").stderr == "no API keys\n"  # nothing created
    scoped = lite.ok("keys", "create", "--email", "bot@example.com", "--scope", "tools:write", "--scope", "tools:read")
    assert scoped.stderr.startswith("API key id 1 for bot@example.com, scopes tools:read tools:write (")
    lite.ok("keys", "create", "--email", "alice@example.com")
    header, first, second = lite.ok("keys", "list").stdout.splitlines()
    assert header.split()[:4] == ["ID", "PREFIX", "EMAIL", "SCOPES"]
    assert "  tools:read tools:write  " in first and "  (all tools)  " in second
