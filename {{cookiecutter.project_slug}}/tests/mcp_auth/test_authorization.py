"""Scopes, per-tool authorization, discovery (RFC 9728), rate limits, and which requests touch
the token store: the HTTP app end to end (ASGI, real FastMCP, real MCP client)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from mcp_auth.asgi.app import build_http_app
from mcp_auth.crypto import generate_key
from mcp_auth.db import Database
from mcp_auth.db.audit_log import list_events
from mcp_auth.db.keys import ApiKeyStore
from mcp_auth.runtime import Runtime
from mcp_auth.testing.apps import DEMO_SCOPE, demo_app, demo_mcp
from mcp_auth.testing.clients import MCP_HEADERS, jsonrpc, mcp_client, running
from mcp_auth.testing.settings import DEMO_BEARER, make_settings

SCOPED = secrets.token_urlsafe(32)
OTHER_SCOPE = secrets.token_urlsafe(32)
RESOURCE = "https://mcp.example.com/mcp"
METADATA = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
ISSUER = "https://login.example.com"

TOKENS = f"ci-bot={DEMO_BEARER},reader[{DEMO_SCOPE} other:write]={SCOPED},writer[other:write]={OTHER_SCOPE}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def call(http: Any, name: str, headers: dict[str, str], body: bytes | None = None) -> Any:
    if body is None:
        return await http.post(
            "/mcp", json=jsonrpc("tools/call", {"name": name, "arguments": {}}), headers={**MCP_HEADERS, **headers}
        )
    return await http.post("/mcp", content=body, headers={**MCP_HEADERS, **headers})


async def listed(http: Any, headers: dict[str, str]) -> set[str]:
    response = await http.post("/mcp", json=jsonrpc("tools/list"), headers={**MCP_HEADERS, **headers})
    assert response.status_code == 200
    return {tool["name"] for tool in response.json()["result"]["tools"]}


# ----- scopes and per-tool authorization ---------------------------------------------------------


async def test_a_credential_lacking_the_tools_scope_gets_403_and_does_not_see_it() -> None:
    async with running(
        demo_app(MCP_BEARER_TOKENS=TOKENS, MCP_RESOURCE_URL=RESOURCE, MCP_AUTHORIZATION_SERVERS=ISSUER)
    ) as http:
        refused = await call(http, "token_suffix", bearer(OTHER_SCOPE))
        allowed = await call(http, "token_suffix", bearer(SCOPED))
        unscoped = await call(http, "token_suffix", bearer(DEMO_BEARER))
        writer_tools = await listed(http, bearer(OTHER_SCOPE))
        reader_tools = await listed(http, bearer(SCOPED))
    assert refused.status_code == 403
    assert refused.json() == {
        "error": "insufficient_scope",
        "message": f"this tool needs the scope(s) {DEMO_SCOPE}, which the credential lacks",
    }
    assert refused.headers["www-authenticate"] == (
        f'Bearer error="insufficient_scope", scope="{DEMO_SCOPE}", resource_metadata="{METADATA}"'
    )
    assert allowed.status_code == 200 and "default:42" in allowed.text
    assert unscoped.status_code == 200 and "default:42" in unscoped.text  # no scopes: every tool
    assert writer_tools == {"whoami", "access_token"}
    assert reader_tools == {"whoami", "access_token", "token_suffix"}


async def test_fastmcp_sees_the_caller_and_its_scopes() -> None:
    app = demo_app(MCP_BEARER_TOKENS=TOKENS)
    async with running(app):
        async with mcp_client(app, bearer(SCOPED)) as client:
            scoped = (await client.call_tool("access_token", {})).data
        async with mcp_client(app, bearer(DEMO_BEARER)) as client:
            unscoped = (await client.call_tool("access_token", {})).data
    assert scoped == {"client_id": "reader", "scopes": sorted([DEMO_SCOPE, "other:write"]), "expires_at": None}
    # A credential without scopes holds every scope the tools ask for: FastMCP's require_scopes admits it.
    assert unscoped == {"client_id": "ci-bot", "scopes": [DEMO_SCOPE], "expires_at": None}


# ----- discovery ---------------------------------------------------------------------------------


async def test_protected_resource_metadata_is_public_and_every_401_points_to_it() -> None:
    app = demo_app(MCP_RESOURCE_URL=RESOURCE, MCP_AUTHORIZATION_SERVERS=ISSUER)
    async with running(app) as http:
        bare = await http.get("/.well-known/oauth-protected-resource")
        inserted = await http.get("/.well-known/oauth-protected-resource/mcp")
        preflight = await http.options("/.well-known/oauth-protected-resource/mcp")
        anonymous = await call(http, "whoami", {})
        wrong = await call(http, "whoami", bearer("x" * 40))
    assert bare.status_code == inserted.status_code == 200
    assert (
        bare.json()
        == inserted.json()
        == {
            "resource": RESOURCE,
            "authorization_servers": [ISSUER],
            "scopes_supported": [DEMO_SCOPE],
            "bearer_methods_supported": ["header"],
            "resource_name": "demo-mcp",
        }
    )
    assert inserted.headers["access-control-allow-origin"] == "*" and preflight.status_code == 204
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == f'Bearer realm="mcp", resource_metadata="{METADATA}"'
    assert wrong.headers["www-authenticate"] == (
        f'Bearer realm="mcp", error="invalid_token", resource_metadata="{METADATA}"'
    )


async def test_without_a_resource_url_there_is_no_metadata() -> None:
    async with running(demo_app()) as http:
        metadata = await http.get("/.well-known/oauth-protected-resource")
        anonymous = await call(http, "whoami", {})
    assert metadata.status_code == 401  # not public: nothing is published
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="mcp"'


# ----- rate limits -------------------------------------------------------------------------------


async def test_the_call_over_the_limit_gets_429_and_other_callers_are_unaffected() -> None:
    async with running(demo_app(MCP_BEARER_TOKENS=TOKENS, MCP_RATE_LIMIT="3/minute")) as http:
        first = [await call(http, "whoami", bearer(DEMO_BEARER)) for _ in range(3)]
        over = await call(http, "whoami", bearer(DEMO_BEARER))
        other = await call(http, "whoami", bearer(SCOPED))
    assert [response.status_code for response in first] == [200, 200, 200]
    assert over.status_code == 429
    assert over.json() == {"error": "rate_limited", "message": "rate limit exceeded (MCP_RATE_LIMIT); retry later"}
    assert int(over.headers["retry-after"]) == 20  # 3 per minute: the next one in 20 s
    assert other.status_code == 200


async def test_failed_authentications_are_limited_per_address_but_discovery_probes_are_not() -> None:
    async with running(demo_app(MCP_RATE_LIMIT="1000/minute")) as http:
        probes = [await call(http, "whoami", {}) for _ in range(25)]
        guesses = [await call(http, "whoami", bearer(secrets.token_urlsafe(32))) for _ in range(19)]
        guesses.append(await call(http, "whoami", {"Cookie": "CF_Authorization=forged.jwt.value"}))
        blocked = await call(http, "whoami", bearer(DEMO_BEARER))  # even a good one, from this address
    assert {response.status_code for response in probes} == {401}
    assert {response.status_code for response in guesses} == {401}
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    assert blocked.json()["error"] == "rate_limited"


# ----- which requests touch the token store --------------------------------------------------------


@pytest.fixture(params=["postgres", "sqlite"])
def store(request: pytest.FixtureRequest) -> tuple[Database, Runtime]:
    """An emptied database (PostgreSQL, then SQLite) and a server runtime on it, nothing stored."""
    database: Database = request.getfixturevalue(f"{request.param}_database")
    url = request.getfixturevalue("database_url" if request.param == "postgres" else "sqlite_url")
    env = {
        "MCP_AUTH_MODE": "bearer",
        "MCP_BEARER_TOKENS": f"ci-bot={DEMO_BEARER}",
        "MCP_TOKEN_STORE": "postgres",
        "DATABASE_URL": url,
        "MCP_AUTH_ENCRYPTION_KEY": generate_key(),
    }
    return database, Runtime.from_settings(make_settings(**env))


async def token_reads(database: Database) -> list[tuple[str | None, str, str, str | None]]:
    rows = [event for event in await list_events(database) if event.action == "get_token"]
    return [(row.token_key, row.user_email, row.result, row.tool) for row in rows]


async def test_only_dispatchable_calls_of_tools_that_need_the_token_are_audited(
    store: tuple[Database, Runtime],
) -> None:
    database, runtime = store
    call_body = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"token_suffix","arguments":{}}}'
    async with running(build_http_app(demo_mcp(), runtime)) as http:
        whoami = await call(http, "whoami", bearer(DEMO_BEARER))  # nothing stored: whoami still works
        batch = await call(http, "", bearer(DEMO_BEARER), body=b"[" + call_body + b"]")
        bom = await call(http, "", bearer(DEMO_BEARER), body=b"\xef\xbb\xbf" + call_body)
        unknown = await call(http, "no_such_tool", bearer(DEMO_BEARER))
        untouched = await token_reads(database)
        await runtime.tokens.set("demo", "default", "shared-token-value")
        used = await call(http, "token_suffix", bearer(DEMO_BEARER))
    assert whoami.status_code == 200 and "ci-bot" in whoami.text
    assert batch.status_code == 400 and bom.status_code == 400
    assert unknown.status_code == 200 and unknown.json()["result"]["isError"] is True
    assert untouched == []
    assert used.status_code == 200 and "default:ue" in used.text
    assert await token_reads(database) == [("default", "ci-bot", "success", "token_suffix")]


async def test_an_api_key_without_the_tools_scope_gets_403_and_with_it_calls(store: tuple[Database, Runtime]) -> None:
    database, runtime = store
    keys = ApiKeyStore(database)
    lacking = (await keys.create("ops@example.com", scopes=["other:write"])).key
    holding = (await keys.create("dev@example.com", scopes=[DEMO_SCOPE])).key
    await runtime.tokens.set("demo", "default", "shared-token-value")
    async with running(build_http_app(demo_mcp(), runtime)) as http:
        refused = await call(http, "token_suffix", bearer(lacking))
        hidden = await listed(http, bearer(lacking))
        allowed = await call(http, "token_suffix", bearer(holding))
    assert refused.status_code == 403 and refused.json()["error"] == "insufficient_scope"
    assert "token_suffix" not in hidden
    assert allowed.status_code == 200 and "default:ue" in allowed.text
    assert await token_reads(database) == [("default", "dev@example.com", "success", "token_suffix")]


async def test_a_tool_mixing_scope_and_custom_checks_is_open_to_unrestricted_credentials() -> None:
    """FastMCP withholds the scopes of a check list holding a custom check; the index reads them
    check by check, so a credential without scopes still holds them and may call the tool."""
    from fastmcp import FastMCP
    from fastmcp.server.auth import require_scopes
    from mcp_auth.tool_policies import ToolPolicies

    mcp = FastMCP("mixed")

    def always(ctx: object) -> bool:
        return True

    @mcp.tool(auth=[require_scopes("reports:read"), always])
    def report() -> str:
        return "ok"

    policies = ToolPolicies()
    await policies.load(mcp)
    assert policies.scopes_supported == ("reports:read",)
    app = build_http_app(
        mcp, Runtime.from_settings(make_settings(**{"MCP_AUTH_MODE": "bearer", "MCP_BEARER_TOKENS": TOKENS}))
    )
    async with running(app) as http:
        unrestricted = await call(http, "report", bearer(DEMO_BEARER))
        lacking = await call(http, "report", bearer(OTHER_SCOPE))
    assert unrestricted.status_code == 200 and '"ok"' in unrestricted.text
    assert lacking.status_code == 403
