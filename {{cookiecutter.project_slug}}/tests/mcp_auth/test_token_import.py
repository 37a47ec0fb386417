"""``tokens import`` and ``mcp_auth.import_tokens``: many tokens in one transaction, all or nothing.

JSON lines or CSV on stdin; a bad line is named by number and nothing is written; every token gets
its own chained ``set_token`` row; values appear in no output and no audit row.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator

import mcp_auth
import pytest
import typer
from mcp_auth import token_functions
from mcp_auth.audit import KEYED_LOG_MESSAGE
from mcp_auth.cli import build_cli
from mcp_auth.config import ProjectInfo
from mcp_auth.crypto import Envelope, Keyring, generate_key, parse_key
from mcp_auth.db import Database
from mcp_auth.db.audit_log import verify_chain
from mcp_auth.db.models import audit_log, tokens
from mcp_auth.errors import ConfigError, ReadOnlyStore, ServiceUnavailable
from mcp_auth.stores.database import DatabaseTokenStore
from mcp_auth.stores.env import EnvTokenStore
from mcp_auth.token_import import InvalidTokenRow, parse
from sqlalchemy import select
from typer.testing import CliRunner, Result

OPERATOR = "ops@example.com"
AUDIT_KEY = secrets.token_bytes(32)


def secret(n: int) -> str:
    return f"import-secret-{n}-{secrets.token_hex(8)}"


@pytest.fixture
def cli(project: ProjectInfo) -> Iterator[typer.Typer]:
    """The console script as the project builds it (``build_cli``), run in-process."""
    with token_functions.isolated():  # its root callback configures the package API
        yield build_cli(project, f"{project.package}.app:create_app")


def run(cli: typer.Typer, url: str, key: str, *args: str, input: str | bytes) -> Result:
    env = {"DATABASE_URL": url, "MCP_AUTH_ENCRYPTION_KEY": key, "MCP_OPERATOR_EMAIL": OPERATOR}
    return CliRunner().invoke(cli, ["tokens", "import", *args], input=input, env=env)


def url_of(database: Database) -> str:
    return database.engine.url.render_as_string(hide_password=False)


def stored(database: Database, key: str) -> dict[tuple[str, str], str]:
    keyring = Keyring(parse_key(key, name="key"))
    columns = (tokens.c.service_id, tokens.c.key, tokens.c.key_id, tokens.c.nonce, tokens.c.ciphertext)
    with database.engine.connect() as conn:
        found = conn.execute(select(*columns)).all()
    return {(s, k): keyring.decrypt(s, k, Envelope(kid, bytes(n), bytes(c))) for s, k, kid, n, c in found}


def audit_rows(database: Database) -> list[tuple[object, ...]]:
    with database.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(select(audit_log).order_by(audit_log.c.id))]


def test_cli_imports_json_lines_then_csv_over_them(cli: typer.Typer, database: Database) -> None:
    key, url = generate_key(), url_of(database)
    values = [secret(n) for n in range(5)]
    jsonl = "\n".join(
        json.dumps({"service": "demo", "key": name, "value": value})
        for name, value in (("default", values[0]), ("alice@example.com", values[1]), ("bob@example.com", values[2]))
    )
    first = run(cli, url, key, input=jsonl.replace("\n", "\n\n", 1) + "\n")
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("imported 3 tokens (key id ") and not first.stderr
    # CSV as a spreadsheet saves it (byte-order mark, header, CRLF); bob is overwritten (upsert),
    # a quoted comma and quote survive.
    tricky = values[4] + ',"quoted"'
    quoted = tricky.replace('"', '""')
    csv_text = f'\ufeffservice,key,value\r\ndemo,bob@example.com,{values[3]}\r\nother,default,"{quoted}"\r\n'
    second = run(cli, url, key, "--format", "csv", input=csv_text)
    assert second.exit_code == 0, second.output
    assert second.stdout.startswith("imported 2 tokens")

    assert stored(database, key) == {
        ("demo", "default"): values[0],
        ("demo", "alice@example.com"): values[1],
        ("demo", "bob@example.com"): values[3],
        ("other", "default"): tricky,
    }
    rows = audit_rows(database)
    by_name = {column.name: index for index, column in enumerate(audit_log.columns)}
    assert [(r[by_name["action"]], r[by_name["detail"]], r[by_name["result"]]) for r in rows] == [
        ("set_token", "import", "success")
    ] * 5
    assert [r[by_name["token_key"]] for r in rows][-2:] == ["bob@example.com", "default"]
    assert {r[by_name["user_email"]] for r in rows} == {OPERATOR}
    assert asyncio.run(verify_chain(database)).ok
    printed = first.output + second.output + repr(rows)
    assert not [value for value in [*values, tricky] if value in printed]


BAD_INPUTS = [
    (
        '{"service": "demo", "key": "a", "value": "v"}\n{"service": "demo", "key": "b", "value": "v"\n',
        "line 2: malformed JSON",
    ),
    (
        '{"service": "demo", "key": "a", "value": "v"}\n\n{"service": "demo", "key": "b"}\n',
        "line 3: missing field value",
    ),
    ('{"service": "demo", "key": "a", "value": ""}\n', "line 1: the value of demo/a is empty"),
    ('{"service": "demo", "key": "a", "value": 7}\n', "line 1: value must be a string"),
    ('{"service": "demo", "key": "a", "value": "v", "note": 1}\n', "line 1: unexpected field 'note'"),
    ('["demo", "a", "v"]\n', "line 1: expected an object"),  # detected as CSV: --format jsonl below
    ('{"service": " ", "key": "a", "value": "v"}\n', "line 1: service must be 1 to 255 characters"),
    ('{"service": "demo", "key": "' + "k" * 256 + '", "value": "v"}\n', "line 1: key must be 1 to 255 characters"),
    ('{"service": "demo", "key": "a\\u0000", "value": "v"}\n', "line 1: key must be UTF-8 text without NUL"),
    ('{"service": "demo", "key": "a", "value": "\\ud800"}\n', "line 1: the value of demo/a is not valid UTF-8"),
    ("service,key,value\ndemo,a,v1\ndemo,b,v2\ndemo,a,v3\n", "line 4: demo/a is already on line 2"),
    ("demo,a,v1\ndemo,b\n", "line 2: expected 3 fields (service,key,value), found 2"),
    ('demo,a,"multi\nline"\ndemo,b,v\ndemo,c,"open\n', "line 4: malformed CSV"),
    ("demo,a,v\ndemo,b,\n", "line 2: the value of demo/b is empty"),
    ("service,key,value\n", "no tokens on stdin"),
    ("", "no tokens on stdin"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_INPUTS)
def test_a_bad_line_is_named_and_nothing_is_written(
    cli: typer.Typer, sqlite_database: Database, text: str, expected: str
) -> None:
    key, url = generate_key(), url_of(sqlite_database)
    args = ("--format", "jsonl") if text.startswith("[") else ()
    result = run(cli, url, key, *args, input=text)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"error: {expected}") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output and not result.stdout
    assert stored(sqlite_database, key) == {} and audit_rows(sqlite_database) == []


def test_bytes_that_are_not_utf8_are_named_by_line(cli: typer.Typer, sqlite_database: Database) -> None:
    result = run(cli, url_of(sqlite_database), generate_key(), input=b"demo,a,v\ndemo,b,\xff\xfe\n")
    assert (result.exit_code, result.stderr) == (1, "error: line 2: not UTF-8 text\n")


def test_a_late_bad_line_leaves_the_table_as_it_was(cli: typer.Typer, database: Database) -> None:
    key, url = generate_key(), url_of(database)
    assert run(cli, url, key, input="demo,default,before\n").exit_code == 0
    lines = [f"demo,user{n},{secret(n)}" for n in range(200)]
    lines[150] = "demo,user3,duplicate"
    result = run(cli, url, key, input="\n".join(lines))
    assert result.stderr == "error: line 151: demo/user3 is already on line 4\n"
    assert stored(database, key) == {("demo", "default"): "before"}
    assert len(audit_rows(database)) == 1


async def test_an_audit_row_that_cannot_be_written_rolls_the_tokens_back(database: Database) -> None:
    """All or nothing down to the last statement: the audit rows are written after the tokens."""
    key = generate_key()
    keyed = DatabaseTokenStore(database, Keyring(parse_key(key, name="k")), actor=OPERATOR, audit_key=AUDIT_KEY)
    assert await keyed.import_many([("demo", "default", "first")]) == 1
    unkeyed = DatabaseTokenStore(database, keyed.keyring, actor=OPERATOR)
    with pytest.raises(ServiceUnavailable, match="the audit log is keyed") as raised:
        await unkeyed.import_many([("demo", "default", "second"), ("demo", "new", "value")])
    assert raised.value.message == KEYED_LOG_MESSAGE
    assert stored(database, key) == {("demo", "default"): "first"}
    check = await verify_chain(database, key=AUDIT_KEY)
    assert check.ok and check.rows == 1


async def test_a_retired_key_is_refused_like_set(database: Database) -> None:
    old, new = generate_key(), generate_key()
    store = DatabaseTokenStore(database, Keyring(parse_key(old, name="k")), actor=OPERATOR)
    await store.set("demo", "default", "v")
    await store.rotate_key(old, new)
    stale = DatabaseTokenStore(database, Keyring(parse_key(old, name="k")), actor=OPERATOR)
    with pytest.raises(ConfigError, match="was retired by a key rotation"):
        await stale.import_many([("demo", "default", "stale"), ("demo", "x", "stale")])
    assert stored(database, new) == {("demo", "default"): "v"}
    *_, refused = audit_rows(database)
    by_name = {column.name: index for index, column in enumerate(audit_log.columns)}
    assert refused[by_name["result"]] == "failure" and refused[by_name["token_key"]] is None
    assert str(refused[by_name["detail"]]).startswith("import of 2 tokens refused: MCP_AUTH_ENCRYPTION_KEY")


@pytest.mark.usefixtures("token_functions_state")
async def test_package_api_round_trip_keyed(database: Database) -> None:
    key = generate_key()
    store = DatabaseTokenStore(database, Keyring(parse_key(key, name="k")), actor=OPERATOR, audit_key=AUDIT_KEY)
    mcp_auth.configure(store=store)
    values = {("demo", f"user{n}"): secret(n) for n in range(3)}
    assert await mcp_auth.import_tokens((s, k, v) for (s, k), v in values.items()) == 3
    assert {name: await mcp_auth.get_token(*name) for name in values} == values
    with pytest.raises(InvalidTokenRow, match=r"^row 2: demo/user0 is already on row 1$"):
        await mcp_auth.import_tokens([("demo", "user0", "a"), ("demo", "user0", "b")])
    with pytest.raises(ValueError, match=r"^row 1: expected a \(service, key, value\) tuple of strings$"):
        await mcp_auth.import_tokens([("demo", "user0")])  # type: ignore[list-item]
    assert await mcp_auth.import_tokens([]) == 0
    assert stored(database, key) == values
    check = await verify_chain(database, key=AUDIT_KEY)
    assert check.ok and check.rows == 6 and check.keyed_from == 1  # 3 writes, 3 reads
    assert not [value for value in values.values() if value in repr(audit_rows(database))]


@pytest.mark.usefixtures("token_functions_state")
async def test_the_env_store_is_read_only() -> None:
    mcp_auth.configure(store=EnvTokenStore("demo", "DEMO_API_TOKEN", "t"))
    with pytest.raises(ReadOnlyStore, match=r"^importing tokens needs MCP_TOKEN_STORE=postgres \(the env store"):
        await mcp_auth.import_tokens([("demo", "default", "v")])


def test_csv_records_are_named_by_their_first_line() -> None:
    text = 'SERVICE, Key ,value\n\ndemo,a,"two\nlines"\r\ndemo,b,"x"\n'
    assert parse(text) == [("demo", "a", "two\nlines"), ("demo", "b", "x")]
    with pytest.raises(InvalidTokenRow, match=r"^line 5: the value of demo/b is empty$"):
        parse(text.replace('"x"', ""))
    assert parse('{"service": "s", "key": "k", "value": "v\u2028w"}', "jsonl") == [("s", "k", "v\u2028w")]
