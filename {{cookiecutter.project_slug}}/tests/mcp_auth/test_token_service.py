"""TokenService: the one audited-read path shared by the middleware and mcp_auth.get_token().

The single-round-trip path is chosen by capability (the store audits its own reads into the
sink's log), and the audit actor of a read made while serving a request is the caller.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_auth
import pytest
from fastmcp import FastMCP
from mcp_auth.asgi.app import build_http_app
from mcp_auth.audit import LogAuditSink
from mcp_auth.context import CallContext, bind, unbind
from mcp_auth.crypto import generate_key
from mcp_auth.db import Database
from mcp_auth.db.audit_log import DatabaseAuditSink, list_events
from mcp_auth.identity import Identity
from mcp_auth.runtime import Runtime
from mcp_auth.stores.database import DatabaseTokenStore
from mcp_auth.testing.clients import mcp_client, running
from mcp_auth.testing.settings import DEMO_BEARER, make_settings
from mcp_auth.tokens import ResolvedToken, TokenService
from sqlalchemy import event

OPERATOR = "ops@example.com"
CALLER = Identity(subject="alice@example.com", method="api_key", email="alice@example.com")


async def service_on(database: Database, sink: Any) -> TokenService:
    settings = make_settings(MCP_AUTH_ENCRYPTION_KEY=generate_key())
    store = DatabaseTokenStore(database, settings.keyring(), actor=OPERATOR, service_name="demo")
    await store.set("demo", "default", "shared-token-value")
    return TokenService(store, sink, service="demo", operator=OPERATOR)


async def test_reads_are_audited_in_the_stores_log_in_one_trip(database: Database) -> None:
    tokens = await service_on(database, DatabaseAuditSink(database))
    assert tokens.reads_in_one_trip  # the store's capability was seen
    assert await tokens.get("demo", "default") == "shared-token-value"
    assert await tokens.get("demo", "nobody") is None
    rows = [(e.action, e.token_key, e.result, e.user_email) for e in await list_events(database)]
    assert rows[-2:] == [
        ("get_token", "default", "success", OPERATOR),
        ("get_token", "nobody", "failure", OPERATOR),
    ]


async def test_another_sink_gets_the_audit_rows(sqlite_database: Database, caplog: pytest.LogCaptureFixture) -> None:
    """The store cannot write into a log sink: the service reads, then audits through the sink."""
    tokens = await service_on(sqlite_database, LogAuditSink())
    assert not tokens.reads_in_one_trip
    with caplog.at_level(logging.INFO, logger="mcp_auth.audit"):
        assert await tokens.get("demo", "default") == "shared-token-value"
    (line,) = [getattr(r, "audit") for r in caplog.records if r.name == "mcp_auth.audit"]
    assert (line["action"], line["result"], line["user_email"]) == ("get_token", "success", OPERATOR)
    assert "shared-token-value" not in caplog.text
    assert [e.action for e in await list_events(sqlite_database)] == ["set_token"]


async def test_a_read_inside_a_request_is_audited_as_the_caller(sqlite_database: Database) -> None:
    tokens = await service_on(sqlite_database, DatabaseAuditSink(sqlite_database))
    token = bind(CallContext(identity=CALLER, service="demo"))
    try:
        assert await tokens.get("demo", "default") == "shared-token-value"
    finally:
        unbind(token)
    assert await tokens.get("demo", "default") == "shared-token-value"
    actors = [e.user_email for e in await list_events(sqlite_database) if e.action == "get_token"]
    assert actors == [CALLER.subject, OPERATOR]


async def test_a_tool_calling_get_token_uses_the_servers_store_and_names_the_caller(sqlite_url: str) -> None:
    key = generate_key()
    env = {
        "MCP_AUTH_MODE": "bearer",
        "MCP_BEARER_TOKENS": f"ci-bot={DEMO_BEARER}",
        "MCP_TOKEN_STORE": "postgres",
        "DATABASE_URL": sqlite_url,
        "MCP_AUTH_ENCRYPTION_KEY": key,
        "MCP_OPERATOR_EMAIL": OPERATOR,
    }
    mcp = FastMCP("demo")

    @mcp.tool(tags={mcp_auth.NEEDS_UPSTREAM_TOKEN})
    async def read_other() -> bool:
        return await mcp_auth.get_token("demo", "other") is not None

    runtime = Runtime.from_settings(make_settings(**env))
    await runtime.tokens.set("demo", "default", "shared-token-value")
    await runtime.tokens.set("demo", "other", "other-token-value")
    app = build_http_app(mcp, runtime)
    async with running(app), mcp_client(app, {"Authorization": f"Bearer {DEMO_BEARER}"}) as client:
        assert (await client.call_tool("read_other", {})).data is True
    database = Database.from_url(sqlite_url)
    try:
        reads = [(e.token_key, e.user_email) for e in await list_events(database) if e.action == "get_token"]
    finally:
        database.close()
    # The middleware's hand-out for the call, then the tool's own read: both as the caller.
    assert reads == [("default", "ci-bot"), ("other", "ci-bot")]


MISSING = "no token stored for service 'demo', key 'default'"


def get_token_rows(events: list[Any]) -> list[tuple[str | None, str, str, str | None, str | None]]:
    return [(e.token_key, e.result, e.user_email, e.tool, e.detail) for e in events if e.action == "get_token"]


async def test_resolve_prefers_the_callers_own_token_and_names_the_key_used(database: Database) -> None:
    tokens = await service_on(database, DatabaseAuditSink(database))
    assert await tokens.resolve(CALLER, "search") == ResolvedToken("default", "shared-token-value")
    await tokens.set("demo", CALLER.subject, "own-token-value")
    assert await tokens.resolve(CALLER, "search") == ResolvedToken(CALLER.subject, "own-token-value")
    await tokens.delete("demo", "default")
    await tokens.delete("demo", CALLER.subject)
    assert await tokens.resolve(CALLER, "search") is None
    assert get_token_rows(await list_events(database)) == [
        ("default", "success", CALLER.subject, "search", None),
        (CALLER.subject, "success", CALLER.subject, "search", None),
        ("default", "failure", CALLER.subject, "search", MISSING),  # one row for the whole miss
    ]


async def test_resolve_through_another_sink_audits_the_same_rows(
    sqlite_database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that does not audit its own reads: key by key, audited through the sink."""
    tokens = await service_on(sqlite_database, LogAuditSink())
    with caplog.at_level(logging.INFO, logger="mcp_auth.audit"):
        assert await tokens.resolve(CALLER, "search") == ResolvedToken("default", "shared-token-value")
        await tokens.delete("demo", "default")
        assert await tokens.resolve(CALLER, "search") is None
    lines = [getattr(r, "audit") for r in caplog.records if r.name == "mcp_auth.audit"]
    assert [(x["token_key"], x["result"], x["user_email"], x["tool"], x["detail"]) for x in lines] == [
        ("default", "success", CALLER.subject, "search", None),
        ("default", "failure", CALLER.subject, "search", MISSING),
    ]


@contextlib.contextmanager
def wire_trace(database: Database, path: Path) -> Iterator[list[str]]:
    """The messages libpq sent to the server on every connection the pool handed out meanwhile
    (its protocol trace, BEGIN and COMMIT included): ``Parse``, ``Sync``, ``Query COMMIT``, ..."""
    from psycopg import pq

    sent: list[str] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        dbapi_connection.pgconn.trace(fd)
        dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)

    def checkin(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.pgconn.untrace()  # flushes

    event.listen(database.engine, "checkout", checkout)
    event.listen(database.engine, "checkin", checkin)
    try:
        yield sent
    finally:
        event.remove(database.engine, "checkout", checkout)
        event.remove(database.engine, "checkin", checkin)
        os.close(fd)
    for line in path.read_text().splitlines():
        if line.startswith("F\t"):  # frontend: sent by us (a statement's text may span lines)
            _, _, message, *text = line.split("\t")
            sent.append(message if message != "Query" else "Query " + text[0].strip(' "'))


async def test_falling_back_to_default_is_one_statement_and_two_round_trips_on_postgresql(
    postgres_database: Database, tmp_path: Path
) -> None:
    tokens = await service_on(postgres_database, DatabaseAuditSink(postgres_database))
    with wire_trace(postgres_database, tmp_path / "trace") as sent:
        assert await tokens.resolve(CALLER, "search") == ResolvedToken("default", "shared-token-value")
    # One statement reads both keys and writes the audit row naming the one used, pipelined with
    # the BEGIN: one round trip (one Sync). The COMMIT is a second, sent only once the value
    # decrypted, so the success row never commits for a hand-out that did not happen.
    statement = ["Parse", "Bind", "Describe", "Execute"]
    assert sent == [*statement, *statement, "Sync", "Flush", *statement, "Sync", "Flush"]
    assert get_token_rows(await list_events(postgres_database)) == [
        ("default", "success", CALLER.subject, "search", None)
    ]
