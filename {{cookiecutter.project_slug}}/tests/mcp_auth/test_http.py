"""The authenticated HTTP app end to end (ASGI, real FastMCP): 401/503 contract, modes, health."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from mcp_auth.asgi.app import build_http_app
from mcp_auth.backend import Backend
from mcp_auth.errors import ReadOnlyStore
from mcp_auth.runtime import Runtime
from mcp_auth.stores.base import TokenStore
from mcp_auth.testing.apps import DEMO_TOKEN, demo_mcp
from mcp_auth.testing.clients import MCP_HEADERS, jsonrpc, mcp_client, running
from mcp_auth.testing.cloudflare import FakeCloudflareAccess
from mcp_auth.testing.settings import DEMO_BEARER, make_settings
from mcp_auth.tokens import TokenService
from starlette.applications import Starlette
from starlette.types import Message, Receive, Scope, Send

TOKEN = DEMO_TOKEN


def build(store: TokenStore | None = None, /, **env: str) -> Starlette:
    """The app for ``env``; ``store`` replaces the configured token store."""
    runtime = Runtime.from_settings(make_settings(**env))
    if store is not None:
        old = runtime.tokens
        tokens = TokenService(store, old.audit, service=old.service, operator=old.operator)
        runtime = dataclasses.replace(runtime, backend=Backend(tokens, runtime.database))
    return build_http_app(demo_mcp(), runtime)


def bearer_env(**extra: str) -> dict[str, str]:
    return {
        "MCP_AUTH_MODE": "bearer",
        "MCP_BEARER_TOKENS": f"ci-bot={DEMO_BEARER}",
        "DEMO_API_TOKEN": TOKEN,
        **extra,
    }


def both_env(cf: FakeCloudflareAccess, **extra: str) -> dict[str, str]:
    return {**bearer_env(), "MCP_AUTH_MODE": "both", **cf.env(), **extra}


async def call_tool(client: Any, name: str, headers: dict[str, str]) -> Any:
    return await client.post(
        "/mcp", json=jsonrpc("tools/call", {"name": name, "arguments": {}}), headers={**MCP_HEADERS, **headers}
    )


async def test_health_is_public_and_has_no_secrets() -> None:
    app = build(**bearer_env())
    async with running(app) as http:
        response = await http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "demo-mcp", "auth": "bearer", "token_storage": "env"}
    assert TOKEN not in response.text and DEMO_BEARER not in response.text


async def test_status_ready_and_503_when_token_missing() -> None:
    async with running(build(**bearer_env())) as http:
        assert (await http.get("/status")).status_code == 200
    env = bearer_env()
    del env["DEMO_API_TOKEN"]
    async with running(build(**env)) as http:
        response = await http.get("/status")
    assert response.status_code == 503
    assert response.json() == {"error": "service_unavailable", "message": "DEMO_API_TOKEN is not set"}


async def test_missing_credential_is_401_saying_what_to_send() -> None:
    async with running(build(**bearer_env())) as http:
        response = await http.post("/mcp", json=jsonrpc("tools/list"), headers=MCP_HEADERS)
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "unauthorized"
    assert "Authorization: Bearer" in body["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_wrong_bearer_token_is_401_and_logged_without_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    wrong = "not-the-right-token-000000000000"
    async with running(build(**bearer_env())) as http:
        response = await http.post(
            "/mcp", json=jsonrpc("tools/list"), headers={**MCP_HEADERS, "Authorization": f"Bearer {wrong}"}
        )
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized", "message": "Invalid bearer token"}
    rejected = [r for r in caplog.records if r.getMessage() == "authentication rejected"]
    assert rejected and rejected[0].remote_addr == "127.0.0.1"  # type: ignore[attr-defined]
    assert wrong not in caplog.text


async def test_bearer_caller_reaches_tool_with_identity_and_token() -> None:
    app = build(**bearer_env())
    async with running(app):
        async with mcp_client(app, {"Authorization": f"Bearer {DEMO_BEARER}"}) as client:
            who = await client.call_tool("whoami", {})
            suffix = await client.call_tool("token_suffix", {})
    assert who.data == {"identity": "ci-bot", "auth_method": "bearer", "email": None}
    assert suffix.data == "default:42"


async def test_missing_upstream_token_is_http_503_for_tools_that_need_it_only() -> None:
    env = bearer_env()
    del env["DEMO_API_TOKEN"]
    auth = {"Authorization": f"Bearer {DEMO_BEARER}"}
    async with running(build(**env)) as http:
        listing = await http.post("/mcp", json=jsonrpc("tools/list"), headers={**MCP_HEADERS, **auth})
        who = await call_tool(http, "whoami", auth)
        called = await call_tool(http, "token_suffix", auth)
    assert listing.status_code == 200  # requests that call no tool never touch the store
    assert who.status_code == 200 and "ci-bot" in who.text  # whoami does not declare the upstream token
    assert called.status_code == 503
    assert called.json() == {"error": "service_unavailable", "message": "DEMO_API_TOKEN is not set"}


async def test_cloudflare_jwt_authenticates_user(cf_access: FakeCloudflareAccess) -> None:
    app = build(**both_env(cf_access))
    async with running(app):
        async with mcp_client(app, {"Cf-Access-Jwt-Assertion": cf_access.mint(email="bob@example.com")}) as c:
            who = await c.call_tool("whoami", {})
    assert who.data == {"identity": "bob@example.com", "auth_method": "cloudflare", "email": "bob@example.com"}


async def test_cloudflare_cookie_is_accepted(cf_access: FakeCloudflareAccess) -> None:
    token = cf_access.mint(email="carol@example.com")
    async with running(build(**both_env(cf_access))) as http:
        response = await call_tool(http, "whoami", {"Cookie": f"CF_Authorization={token}; other=1"})
    assert response.status_code == 200
    assert "carol@example.com" in response.text


async def test_a_malformed_cookie_does_not_hide_cf_authorization(cf_access: FakeCloudflareAccess) -> None:
    token = cf_access.mint(email="carol@example.com")
    cookies = [f'broken="unterminated; CF_Authorization={token}', f"a=b; ;;x; CF_Authorization={token}"]
    async with running(build(**both_env(cf_access, MCP_AUTH_MODE="cloudflare"))) as http:
        for cookie in cookies:
            response = await call_tool(http, "whoami", {"Cookie": cookie})
            assert response.status_code == 200, (cookie, response.text)
            assert "carol@example.com" in response.text


async def test_split_cookie_headers_are_joined(cf_access: FakeCloudflareAccess) -> None:
    token = cf_access.mint(email="carol@example.com")
    body = jsonrpc("tools/call", {"name": "whoami", "arguments": {}})
    headers = [*MCP_HEADERS.items(), ("Cookie", "theme=dark"), ("Cookie", f"CF_Authorization={token}")]
    async with running(build(**both_env(cf_access, MCP_AUTH_MODE="cloudflare"))) as http:
        response = await http.post("/mcp", json=body, headers=headers)
    assert response.status_code == 200 and "carol@example.com" in response.text


@pytest.mark.parametrize("header", ["Authorization", "Cf-Access-Jwt-Assertion"])
async def test_two_credentials_of_one_kind_are_401_not_last_one_wins(
    cf_access: FakeCloudflareAccess, header: str
) -> None:
    valid = f"Bearer {DEMO_BEARER}" if header == "Authorization" else cf_access.mint()
    body = jsonrpc("tools/call", {"name": "whoami", "arguments": {}})
    for pair in ([("x", header), (valid, header)], [(valid, header), ("x", header)], [(valid, header)] * 2):
        headers = [*MCP_HEADERS.items(), *((name, value) for value, name in pair)]
        async with running(build(**both_env(cf_access))) as http:
            response = await http.post("/mcp", json=body, headers=headers)
        assert response.status_code == 401, response.text
        assert response.json() == {
            "error": "unauthorized",
            "message": f"Send one credential: the request has more than one {header.title()} header",
        }


async def test_expired_jwt_is_401_invalid_jwt(cf_access: FakeCloudflareAccess) -> None:
    token = cf_access.mint(expires_in=-3600)
    async with running(build(**both_env(cf_access))) as http:
        response = await call_tool(http, "whoami", {"Cf-Access-Jwt-Assertion": token})
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized", "message": "Invalid JWT"}


async def test_invalid_jwt_decides_even_with_a_valid_bearer(cf_access: FakeCloudflareAccess) -> None:
    headers = {"Cf-Access-Jwt-Assertion": cf_access.mint(aud=["other-app"]), "Authorization": f"Bearer {DEMO_BEARER}"}
    async with running(build(**both_env(cf_access))) as http:
        response = await call_tool(http, "whoami", headers)
    assert response.status_code == 401
    assert response.json()["message"] == "Invalid JWT"


async def test_unsigned_email_header_is_never_trusted(cf_access: FakeCloudflareAccess) -> None:
    headers = {"Cf-Access-Authenticated-User-Email": "admin@example.com"}
    async with running(build(**both_env(cf_access))) as http:
        response = await call_tool(http, "whoami", headers)
    assert response.status_code == 401


async def test_cloudflare_mode_refuses_valid_bearer(cf_access: FakeCloudflareAccess) -> None:
    async with running(build(**both_env(cf_access, MCP_AUTH_MODE="cloudflare"))) as http:
        response = await call_tool(http, "whoami", {"Authorization": f"Bearer {DEMO_BEARER}"})
        ok = await call_tool(http, "whoami", {"Cf-Access-Jwt-Assertion": cf_access.mint()})
    assert response.status_code == 401
    assert "Cf-Access-Jwt-Assertion" in response.json()["message"]
    assert ok.status_code == 200


async def test_bearer_mode_refuses_valid_jwt(cf_access: FakeCloudflareAccess) -> None:
    async with running(build(**bearer_env(**cf_access.env()))) as http:
        response = await call_tool(http, "whoami", {"Cf-Access-Jwt-Assertion": cf_access.mint()})
    assert response.status_code == 401
    assert "MCP_AUTH_MODE=bearer" in response.json()["message"]


async def test_jwks_unreachable_is_503_not_401(cf_access: FakeCloudflareAccess) -> None:
    token = cf_access.mint()
    cf_access.down = True
    async with running(build(**both_env(cf_access))) as http:
        response = await call_tool(http, "whoami", {"Cf-Access-Jwt-Assertion": token})
    assert response.status_code == 503
    assert response.json()["error"] == "service_unavailable"
    assert "Cloudflare Access certificates" in response.json()["message"]


async def test_nothing_stored_is_503_naming_service_and_callers() -> None:
    """A store that answers but holds no token: 503 on tool calls until one is stored (the contract)."""

    class EmptyStore:
        name = "empty"

        async def get(self, service: str, key: str) -> str | None:
            return None

        async def set(self, service: str, key: str, value: str) -> None:
            raise ReadOnlyStore("the empty store is read-only")

        async def delete(self, service: str, key: str) -> bool:
            return False

        async def check(self) -> None:
            return None

        async def close(self) -> None:
            return None

    app = build(EmptyStore(), **bearer_env())
    auth = {"Authorization": f"Bearer {DEMO_BEARER}"}
    async with running(app) as http:
        listing = await http.post("/mcp", json=jsonrpc("tools/list"), headers={**MCP_HEADERS, **auth})
        called = await call_tool(http, "token_suffix", auth)
    assert listing.status_code == 200
    assert called.status_code == 503
    assert called.json() == {
        "error": "service_unavailable",
        "message": "no demo token is stored for 'ci-bot' or 'default' (store: empty)",
    }


async def test_deeply_nested_json_is_not_a_500() -> None:
    auth = {"Authorization": f"Bearer {DEMO_BEARER}"}
    async with running(build(**bearer_env())) as http:
        response = await http.post("/mcp", content=b"[" * 50_000, headers={**MCP_HEADERS, **auth})
    assert response.status_code < 500


async def test_websocket_scopes_are_refused() -> None:
    from mcp_auth.asgi.authentication import AuthenticationMiddleware
    from mcp_auth.tool_policies import ToolPolicies

    reached: list[str] = []
    sent: list[Message] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["type"])

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    runtime = build(**bearer_env()).state.runtime
    middleware = AuthenticationMiddleware(
        inner, authenticator=runtime.authenticator, service=runtime.settings.service_name, policies=ToolPolicies()
    )
    await middleware({"type": "websocket", "path": "/mcp", "headers": []}, receive, send)
    assert reached == [] and sent == [{"type": "websocket.close", "code": 1008}]


async def test_tools_share_one_upstream_client_opened_and_closed_with_the_app() -> None:
    """Tools reach upstream APIs through one pooled client per process (a client per call costs
    ~50 ms of CPU); it lives exactly as long as the app."""
    from fastmcp import FastMCP
    from mcp_auth.context import current

    mcp = FastMCP("demo")
    clients: list[Any] = []

    @mcp.tool
    def client_id() -> int:
        clients.append(current().http)
        return id(clients[-1])

    app = build_http_app(mcp, Runtime.from_settings(make_settings(**bearer_env())))
    async with running(app):
        async with mcp_client(app, {"Authorization": f"Bearer {DEMO_BEARER}"}) as client:
            first = (await client.call_tool("client_id", {})).data
            second = (await client.call_tool("client_id", {})).data
        assert first == second and not clients[0].is_closed
    assert clients[0].is_closed
