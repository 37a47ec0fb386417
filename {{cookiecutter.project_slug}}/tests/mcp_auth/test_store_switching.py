"""The spec's migration path: env -> PostgreSQL -> Infisical by configuration alone, through HTTP."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import mcp_auth
import pytest
from fastmcp import FastMCP
from mcp_auth.asgi.app import build_http_app
from mcp_auth.runtime import Runtime
from mcp_auth.testing.clients import MCP_HEADERS, jsonrpc, mcp_client, running
from mcp_auth.testing.infisical import FakeInfisical
from mcp_auth.testing.settings import DEMO_BEARER, make_settings
from mcp_auth.tool_policies import NEEDS_UPSTREAM_TOKEN

AUTH = {"Authorization": f"Bearer {DEMO_BEARER}"}
BASE_ENV = {"MCP_AUTH_MODE": "bearer", "MCP_BEARER_TOKENS": f"ci-bot={DEMO_BEARER}"}


def build(**env: str) -> Any:
    mcp = FastMCP("demo")

    @mcp.tool(tags={NEEDS_UPSTREAM_TOKEN})
    def upstream_token() -> dict[str, str | None]:
        call = mcp_auth.current()
        return {"key": call.token_key, "token": call.service_token}  # test-only: echo to assert

    return build_http_app(mcp, Runtime.from_settings(make_settings(**BASE_ENV, **env)))


async def call(app: Any) -> dict[str, Any]:
    async with running(app), mcp_client(app, AUTH) as client:
        result = await client.call_tool("upstream_token", {})
    return dict(result.data)


async def post_tool_call(app: Any) -> Any:
    async with running(app) as http:
        return await http.post(
            "/mcp",
            json=jsonrpc("tools/call", {"name": "upstream_token", "arguments": {}}),
            headers={**MCP_HEADERS, **AUTH},
        )


@pytest.fixture
def infisical() -> Iterator[FakeInfisical]:
    with FakeInfisical(project_id="proj-1") as fake:
        fake.set_secret("DEMO_API_TOKEN", "token-from-infisical-123")
        yield fake


async def test_env_store() -> None:
    assert await call(build(DEMO_API_TOKEN="token-from-env-123")) == {"key": "default", "token": "token-from-env-123"}


async def test_infisical_store_hands_out_and_audits_to_the_log(
    infisical: FakeInfisical, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mcp_auth.audit")
    app = build(**infisical.env())
    assert await call(app) == {"key": "default", "token": "token-from-infisical-123"}
    audits = [getattr(r, "audit") for r in caplog.records if r.name == "mcp_auth.audit"]
    assert audits and audits[-1]["action"] == "get_token" and audits[-1]["result"] == "success"
    assert audits[-1]["user_email"] == "ci-bot" and audits[-1]["service_id"] == "demo"
    assert "token-from-infisical-123" not in caplog.text
    assert infisical.client_secret not in caplog.text


async def test_infisical_wrong_client_secret_is_503_auth_failed(infisical: FakeInfisical) -> None:
    response = await post_tool_call(build(**infisical.env(INFISICAL_CLIENT_SECRET="wrong-secret")))
    assert response.status_code == 503
    assert response.json()["error"] == "service_unavailable"
    assert response.json()["message"].startswith("Infisical authentication failed")
    assert "wrong-secret" not in response.text


async def test_failing_status_is_cached_and_shows_no_hosts_or_ids(
    infisical: FakeInfisical, caplog: pytest.LogCaptureFixture
) -> None:
    """/status is public: a probe flood must not become a login flood against Infisical (lockout
    of the real identity), and anonymous callers learn the component, not where it lives."""
    caplog.set_level(logging.WARNING, logger="mcp_auth.runtime")
    app = build(**infisical.env(INFISICAL_CLIENT_SECRET="wrong-secret-for-status"))
    now = [1000.0]
    app.state.runtime.clock = lambda: now[0]
    async with running(app) as http:
        answers = [await http.get("/status") for _ in range(30)]
        assert infisical.login_count == 1, "one login for 30 probes within the cache time"
        now[0] += 5.1
        answers.append(await http.get("/status"))
    assert infisical.login_count == 2, "checked again once the failure expired"
    assert {a.status_code for a in answers} == {503}
    body = answers[0].json()
    assert body["error"] == "service_unavailable" and body["message"].startswith("Infisical authentication failed")
    for answer in answers:
        for private in (infisical.url, "127.0.0.1", infisical.project_id, "wrong-secret-for-status"):
            assert private not in answer.text
    reasons = [str(getattr(r, "reason", "")) for r in caplog.records if r.message == "readiness check failed"]
    assert len(reasons) == 2 and not [r for r in reasons if "wrong-secret-for-status" in r]


async def test_status_names_the_host_only_in_the_log(
    infisical: FakeInfisical, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mcp_auth.runtime")
    app = build(**infisical.env())
    infisical.go_down()
    async with running(app) as http:
        status = await http.get("/status")
    assert status.status_code == 503 and status.json()["message"].startswith("Infisical unreachable")
    reasons = [str(getattr(r, "reason", "")) for r in caplog.records if r.message == "readiness check failed"]
    assert infisical.url not in status.text and infisical.url in reasons[0]


async def test_infisical_down_is_503_unreachable_and_status_agrees(infisical: FakeInfisical) -> None:
    app = build(**infisical.env())
    infisical.go_down()
    response = await post_tool_call(app)
    async with running(app) as http:
        status = await http.get("/status")
    assert response.status_code == 503 and response.json()["message"].startswith("Infisical unreachable")
    assert status.status_code == 503 and status.json()["message"].startswith("Infisical unreachable")


async def test_infisical_missing_secret_names_it(infisical: FakeInfisical) -> None:
    response = await post_tool_call(build(**infisical.env(INFISICAL_SECRET_NAME="NOPE_TOKEN")))
    assert response.status_code == 503
    assert response.json()["message"] == (
        "secret NOPE_TOKEN not found in Infisical "
        "(check INFISICAL_PROJECT_ID, INFISICAL_ENVIRONMENT and INFISICAL_SECRET_PATH)"
    )
    assert "proj-1" not in response.text


# ----- PostgreSQL (and SQLite): the same app, DATABASE_URL + MCP_AUTH_ENCRYPTION_KEY --------------

KEY = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80="  # test-only: base64 of 32 bytes


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        request.getfixturevalue("postgres_database")  # emptied tables for this test
        return str(request.getfixturevalue("database_url"))
    return str(request.getfixturevalue("sqlite_url"))


def db_env(url: str, **extra: str) -> dict[str, str]:
    return {"MCP_TOKEN_STORE": "postgres", "DATABASE_URL": url, "MCP_AUTH_ENCRYPTION_KEY": KEY, **extra}


async def test_database_store_prefers_the_callers_own_token(db_url: str) -> None:
    from mcp_auth.db.audit_log import list_events

    app = build(**db_env(db_url))
    store = app.state.runtime.tokens.store
    await store.set("demo", "default", "shared-token-000")
    assert await call(app) == {"key": "default", "token": "shared-token-000"}
    await store.set("demo", "ci-bot", "ci-bots-own-token-000")
    assert await call(app) == {"key": "ci-bot", "token": "ci-bots-own-token-000"}
    events = [e for e in await list_events(app.state.runtime.database) if e.action == "get_token"]
    assert [(e.token_key, e.user_email, e.result) for e in events[-2:]] == [
        ("default", "ci-bot", "success"),
        ("ci-bot", "ci-bot", "success"),
    ]


async def test_tokens_survive_a_restart(db_url: str) -> None:
    first = build(**db_env(db_url))
    await first.state.runtime.tokens.store.set("demo", "default", "persistent-token-1")
    await first.state.runtime.close()
    assert (await call(build(**db_env(db_url))))["token"] == "persistent-token-1"


async def test_nothing_stored_is_503_naming_the_keys(db_url: str) -> None:
    response = await post_tool_call(build(**db_env(db_url)))
    assert response.status_code == 503
    assert response.json()["message"] == "no demo token is stored for 'ci-bot' or 'default' (store: postgres)"


async def test_api_key_authenticates_and_revocation_is_immediate(db_url: str) -> None:
    from mcp_auth.db.keys import ApiKeyStore

    app = build(**db_env(db_url))
    await app.state.runtime.tokens.store.set("demo", "default", "shared-token-000")
    keys = ApiKeyStore(app.state.runtime.database)
    created = await keys.create("dev@example.com")
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {created.key}"}
    body = jsonrpc("tools/call", {"name": "upstream_token", "arguments": {}})
    async with running(app) as http:
        ok = await http.post("/mcp", json=body, headers=headers)
        await keys.revoke(created.id)
        revoked = await http.post("/mcp", json=body, headers=headers)
    assert ok.status_code == 200
    assert revoked.status_code == 401 and revoked.json() == {"error": "unauthorized", "message": "API key revoked"}


async def test_database_down_is_503_with_no_dsn() -> None:
    url = "postgresql://app:db-password-123@127.0.0.1:1/app"
    app = build(**db_env(url))
    response = await post_tool_call(app)
    async with running(app) as http:
        status = await http.get("/status")
    for answer in (response, status):
        assert answer.status_code == 503
        assert answer.json() == {"error": "service_unavailable", "message": "PostgreSQL connection failed"}
        assert "db-password-123" not in answer.text and "127.0.0.1" not in answer.text


async def test_sighup_picks_up_a_rotated_infisical_secret_without_restart(infisical: FakeInfisical) -> None:
    import asyncio
    import os
    import signal

    app = build(**infisical.env(MCP_TOKEN_CACHE_TTL="3600"))
    async with running(app), mcp_client(app, AUTH) as client:
        first = await client.call_tool("upstream_token", {})
        infisical.set_secret("DEMO_API_TOKEN", "rotated-in-infisical-456")
        cached = await client.call_tool("upstream_token", {})
        os.kill(os.getpid(), signal.SIGHUP)  # the server's lifespan installed the handler
        await asyncio.sleep(0.05)
        refreshed = await client.call_tool("upstream_token", {})
    assert first.data["token"] == cached.data["token"] == "token-from-infisical-123"
    assert refreshed.data["token"] == "rotated-in-infisical-456"


def test_server_refuses_to_start_when_the_schema_is_behind(tmp_path: Any) -> None:
    from mcp_auth.errors import ConfigError

    with pytest.raises(ConfigError, match=r"database schema is not up to date: run 'demo-mcp db upgrade'"):
        build(**db_env(f"sqlite:///{tmp_path / 'never-migrated.db'}"))
