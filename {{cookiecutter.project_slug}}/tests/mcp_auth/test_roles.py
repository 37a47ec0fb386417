"""Two database roles: the owner migrates (``db upgrade --runtime-role NAME``), the server runs as NAME.

Against the real PostgreSQL: the runtime role may read and append to the audit log and nothing
more (no UPDATE, DELETE, TRUNCATE, no ALTER TABLE ... DISABLE TRIGGER, no writes to tokens), and
the whole server path (token lookup + audit row written by the chain trigger as that role, API
keys with their last-used update) works as that role. Each test module creates its own role
(a name that needs quoting) and drops it at the end.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import anyio.to_thread
import mcp_auth
import pytest
import typer
from fastmcp import FastMCP
from mcp_auth.asgi.app import build_http_app
from mcp_auth.cli import audit, db, keys, tokens
from mcp_auth.cli.state import CliState
from mcp_auth.crypto import generate_key
from mcp_auth.db import Database, normalize_url
from mcp_auth.db.roles import privilege_warning
from mcp_auth.runtime import Runtime
from mcp_auth.testing.clients import mcp_client, running
from mcp_auth.testing.settings import DEMO, DEMO_BEARER, make_settings
from mcp_auth.tool_policies import NEEDS_UPSTREAM_TOKEN
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner, Result

pytestmark = pytest.mark.postgres

UPSTREAM_TOKEN = "upstream-token-stored-by-the-owner-42"
KEY = generate_key()


def build_cli() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = CliState(project=DEMO, app_factory="unused:create_app")

    for name, module in (("tokens", tokens), ("keys", keys), ("audit", audit), ("db", db)):
        root.add_typer(module.app, name=name)
    return root


def cli(url: str, *args: str, input: str | None = None) -> Result:
    env = {"DATABASE_URL": url, "MCP_AUTH_ENCRYPTION_KEY": KEY, "MCP_OPERATOR_EMAIL": "ops@example.com"}
    return CliRunner().invoke(build_cli(), list(args), input=input, env=env)


@dataclass
class RuntimeRole:
    name: str
    url: str  # DATABASE_URL of the server: the same database, as the runtime role
    owner_url: str

    def connect(self) -> Engine:
        return create_engine(normalize_url(self.url), poolclass=NullPool, isolation_level="AUTOCOMMIT")


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@pytest.fixture(scope="module")
def runtime_role(database_url: str) -> Iterator[RuntimeRole]:
    """A LOGIN role (its name needs quoting) granted by ``db upgrade --runtime-role``; dropped afterwards."""
    name = f'mcp rt"{secrets.token_hex(4)}'
    password = secrets.token_hex(16)
    owner = create_engine(normalize_url(database_url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with owner.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {quoted(name)} LOGIN PASSWORD '{password}'")
    try:
        granted = cli(database_url, "db", "upgrade", "--runtime-role", name)
        assert granted.exit_code == 0, (granted.stdout, granted.stderr)
        assert f"runtime role {name}: SELECT, INSERT on audit_log" in granted.stdout
        url = normalize_url(database_url).set(username=name, password=password)
        yield RuntimeRole(name, url.render_as_string(hide_password=False), database_url)
    finally:
        with owner.connect() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {quoted(name)}")  # its grants in this database
            conn.exec_driver_sql(f"DROP ROLE {quoted(name)}")
        owner.dispose()


def refused(conn: Connection, statement: str) -> bool:
    """True when PostgreSQL refuses ``statement`` for lack of privilege (SQLSTATE 42501)."""
    try:
        conn.exec_driver_sql(statement)
    except DBAPIError as exc:
        return getattr(exc.orig, "sqlstate", None) == "42501"
    return False


ALLOWED = [
    "SELECT count(*) FROM audit_log",
    "SELECT count(*) FROM tokens",
    "SELECT count(*) FROM api_keys",
    "SELECT count(*) FROM retired_encryption_keys",
    "SELECT count(*) FROM mcp_auth_alembic_version",
    "UPDATE api_keys SET last_used_at = now() WHERE id = -1",
]
REFUSED = [
    "UPDATE audit_log SET detail = 'edited'",
    "DELETE FROM audit_log",
    "TRUNCATE audit_log",
    "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
    "ALTER TABLE audit_log DISABLE TRIGGER ALL",
    "DROP TABLE audit_log",
    "SET session_replication_role = replica",  # would skip the triggers
    "DELETE FROM tokens",
    "UPDATE tokens SET key = 'other'",
    "INSERT INTO tokens (service_id, key, ciphertext, nonce, key_id) VALUES ('s', 'k', 'x', 'x', 'k')",
    "INSERT INTO api_keys (key_hash, prefix, email) VALUES ('h', 'p', 'mallory@example.com')",
    "UPDATE api_keys SET revoked_at = NULL",
    "DELETE FROM api_keys",
    "INSERT INTO retired_encryption_keys (key_id) VALUES ('k')",
    "DELETE FROM retired_encryption_keys",
    "UPDATE mcp_auth_alembic_version SET version_num = 'x'",
    "CREATE TABLE audit_log_copy (id int)",  # no CREATE on the schema either (PostgreSQL 15+)
]


def test_the_runtime_role_may_read_and_append_and_nothing_more(runtime_role: RuntimeRole) -> None:
    engine = runtime_role.connect()
    try:
        with engine.connect() as conn:
            for statement in ALLOWED:
                conn.exec_driver_sql(statement)
            may_append = conn.execute(text("SELECT has_table_privilege('audit_log', 'INSERT')")).scalar_one()
            assert may_append is True
            version = conn.execute(text("SELECT current_setting('server_version_num')::int")).scalar_one()
            # Before PostgreSQL 15, PUBLIC may CREATE in the public schema.
            statements = [s for s in REFUSED if version >= 150000 or not s.startswith("CREATE")]
            allowed_anyway = [statement for statement in statements if not refused(conn, statement)]
            assert privilege_warning(conn) is None
    finally:
        engine.dispose()
    assert allowed_anyway == []


@pytest.fixture
def api_key(runtime_role: RuntimeRole, postgres_database: Database) -> str:
    """The owner stores the upstream token and creates an API key (the operator's CLI); returns the key."""
    stored = cli(runtime_role.owner_url, "tokens", "set", "demo", "default", input=UPSTREAM_TOKEN + "\n")
    assert stored.exit_code == 0, stored.stderr
    created = cli(runtime_role.owner_url, "keys", "create", "--email", "alice@example.com")
    assert created.exit_code == 0, created.stderr
    return created.stdout.strip()


async def test_the_server_runs_as_the_runtime_role(
    runtime_role: RuntimeRole, postgres_database: Database, api_key: str
) -> None:

    mcp = FastMCP("demo")

    @mcp.tool(tags={NEEDS_UPSTREAM_TOKEN})
    def token_suffix() -> str:
        call = mcp_auth.current()
        return f"{call.identity.subject}:{call.token_key}:{call.service_token[-2:]}"

    settings = make_settings(
        MCP_AUTH_MODE="bearer",
        MCP_BEARER_TOKENS=f"ci-bot={DEMO_BEARER}",
        MCP_TOKEN_STORE="postgres",
        DATABASE_URL=runtime_role.url,
        MCP_AUTH_ENCRYPTION_KEY=KEY,
    )
    app = build_http_app(mcp, Runtime.from_settings(settings))
    async with running(app) as http:
        assert (await http.get("/status")).status_code == 200
        for credential, caller in ((DEMO_BEARER, "ci-bot"), (api_key, "alice@example.com")):
            async with mcp_client(app, {"Authorization": f"Bearer {credential}"}) as client:
                result = await client.call_tool("token_suffix", {})
            assert result.data == f"{caller}:default:42"

    with postgres_database.engine.connect() as conn:  # the owner's view
        rows = conn.execute(text("SELECT user_email, action, result FROM audit_log WHERE action = 'get_token'")).all()
        last_used = conn.execute(text("SELECT last_used_at FROM api_keys")).scalar_one()
        assert privilege_warning(conn) is not None  # the tests' owner: a superuser or the table owner
    assert {tuple(row) for row in rows} == {
        ("ci-bot", "get_token", "success"),
        ("alice@example.com", "get_token", "success"),
    }
    assert last_used is not None
    verified = await anyio.to_thread.run_sync(cli, runtime_role.owner_url, "audit", "verify")
    assert verified.exit_code == 0, (verified.stdout, verified.stderr)


def _grants(conn: Connection, role: str) -> set[tuple[str, str, str]]:
    table_level = conn.execute(
        text(
            "SELECT table_name, privilege_type, '' FROM information_schema.role_table_grants WHERE grantee = :role "
            "UNION SELECT c.relname, x.privilege_type, a.attname FROM pg_attribute a "  # column-level grants
            "JOIN pg_class c ON c.oid = a.attrelid CROSS JOIN LATERAL aclexplode(a.attacl) x "
            "WHERE x.grantee = (SELECT oid FROM pg_roles WHERE rolname = :role)"
        ),
        {"role": role},
    ).all()
    return {(str(a), str(b), str(c)) for a, b, c in table_level}


EXACT = {
    ("audit_log", "SELECT", ""),
    ("audit_log", "INSERT", ""),
    ("tokens", "SELECT", ""),
    ("api_keys", "SELECT", ""),
    ("api_keys", "UPDATE", "last_used_at"),
    ("retired_encryption_keys", "SELECT", ""),
    ("mcp_auth_alembic_version", "SELECT", ""),
}


def test_grants_are_exact_and_idempotent(runtime_role: RuntimeRole, postgres_database: Database) -> None:
    name = runtime_role.name
    with postgres_database.engine.begin() as conn:
        assert _grants(conn, name) == EXACT
        conn.exec_driver_sql(f"GRANT DELETE, TRUNCATE ON audit_log TO {quoted(name)}")  # a hand-made extra
        conn.exec_driver_sql(f"GRANT UPDATE ON api_keys TO {quoted(name)}")
    again = cli(runtime_role.owner_url, "db", "upgrade", "--runtime-role", name)
    assert again.exit_code == 0, again.stderr
    with postgres_database.engine.connect() as conn:
        assert _grants(conn, name) == EXACT


def test_a_privilege_inherited_from_public_is_refused(runtime_role: RuntimeRole, postgres_database: Database) -> None:
    with postgres_database.engine.begin() as conn:
        conn.exec_driver_sql("GRANT UPDATE ON audit_log TO PUBLIC")
    try:
        result = cli(runtime_role.owner_url, "db", "upgrade", "--runtime-role", runtime_role.name)
    finally:
        with postgres_database.engine.begin() as conn:
            conn.exec_driver_sql("REVOKE UPDATE ON audit_log FROM PUBLIC")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: role {runtime_role.name!r} still has UPDATE on audit_log through PUBLIC or another role: "
        "revoke that grant, then run this again"
    ]


def test_unusable_runtime_roles_are_one_line_errors(database_url: str, sqlite_url: str) -> None:
    missing = cli(database_url, "db", "upgrade", "--runtime-role", "no_such_role_" + secrets.token_hex(4))
    assert missing.exit_code == 1 and len(missing.stderr.splitlines()) == 1
    assert "does not exist: create it first" in missing.stderr and "CREATE ROLE" in missing.stderr
    with create_engine(normalize_url(database_url), poolclass=NullPool).connect() as conn:
        me = conn.execute(text("SELECT current_user")).scalar_one()
    superuser = cli(database_url, "db", "upgrade", "--runtime-role", me)
    assert superuser.exit_code == 1 and ("is a superuser" in superuser.stderr or "owns" in superuser.stderr)
    sqlite = cli(sqlite_url, "db", "upgrade", "--runtime-role", "mcp_runtime")
    assert (sqlite.exit_code, sqlite.stderr) == (1, "error: --runtime-role needs PostgreSQL\n")


def test_no_warning_on_sqlite(sqlite_database: Database) -> None:
    with sqlite_database.engine.connect() as conn:
        assert privilege_warning(conn) is None
