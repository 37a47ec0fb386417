"""A spec-following MCP client, end to end over real HTTP: the official MCP Python SDK's OAuth
provider starts with no token, gets the 401, follows ``resource_metadata`` (RFC 9728) to the
authorization server's metadata (RFC 8414), registers (RFC 7591), authorizes with PKCE and
``resource`` (RFC 8707), obtains a token and calls tools. A token for another audience is refused."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import httpx2
import uvicorn
from mcp import ClientSession
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp_auth.testing.apps import DEMO_SCOPE, demo_app
from mcp_auth.testing.clients import MCP_HEADERS, jsonrpc
from mcp_auth.testing.oidc import FakeAuthorizationServer

REDIRECT_URI = "http://127.0.0.1:1/callback"  # never fetched: the test reads the redirect itself


class MemoryStorage:
    """The SDK's TokenStorage protocol, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Browser:
    """Stands in for the user's browser: opens the authorization URL, where the stand-in
    authorization server approves at once, and hands the redirect's code back to the SDK."""

    def __init__(self) -> None:
        self.visited: list[str] = []
        self._redirect: str | None = None

    async def open(self, authorization_url: str) -> None:
        self.visited.append(authorization_url)
        async with httpx.AsyncClient() as client:
            response = await client.get(authorization_url)
        assert response.status_code == 302, response.text
        self._redirect = response.headers["location"]

    async def callback(self) -> AuthorizationCodeResult:
        assert self._redirect is not None
        query = parse_qs(urlsplit(self._redirect).query)
        return AuthorizationCodeResult(code=query["code"][0], state=query.get("state", [None])[0])


@asynccontextmanager
async def serving(**env: str) -> AsyncIterator[str]:
    """The demo server on a real loopback port, with MCP_RESOURCE_URL = its /mcp (also the OAuth
    audience unless ``env`` names one); yields that URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    app = demo_app(**{"MCP_RESOURCE_URL": url, "MCP_OIDC_AUDIENCE": url, **env})
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve, [sock])
        while not server.started:  # noqa: ASYNC110  (uvicorn exposes a flag, not an event)
            await anyio.sleep(0.01)
        try:
            yield url
        finally:
            server.should_exit = True


async def test_the_sdk_oauth_provider_discovers_logs_in_and_calls_a_tool(idp: FakeAuthorizationServer) -> None:
    browser, storage = Browser(), MemoryStorage()
    async with serving(MCP_OIDC_ISSUER=idp.issuer) as url:
        provider = OAuthClientProvider(
            server_url=url,
            client_metadata=OAuthClientMetadata(
                client_name="sdk-test",
                redirect_uris=[REDIRECT_URI],
                scope=DEMO_SCOPE,
            ),
            storage=storage,
            redirect_handler=browser.open,
            callback_handler=browser.callback,
        )
        async with httpx2.AsyncClient(auth=provider) as http:
            async with streamable_http_client(url, http_client=http) as (read, write, *_):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    listed = {tool.name for tool in (await session.list_tools()).tools}
                    who = await session.call_tool("whoami", {})
                    suffix = await session.call_tool("token_suffix", {})
    paths = [path for _, path in idp.requests]
    assert "/.well-known/oauth-authorization-server" in paths and "/register" in paths and "/token" in paths
    assert len(browser.visited) == 1
    authorization = parse_qs(urlsplit(browser.visited[0]).query)
    assert authorization["resource"] == [url] and authorization["code_challenge_method"] == ["S256"]
    assert storage.tokens is not None and storage.tokens.scope == DEMO_SCOPE
    assert listed == {"whoami", "access_token", "token_suffix"}
    assert who.structured_content == {"identity": idp.subject, "auth_method": "bearer", "email": idp.email}
    assert suffix.structured_content == {"result": "default:42"}


async def test_a_token_for_another_audience_is_refused(idp: FakeAuthorizationServer) -> None:
    async with serving(MCP_OIDC_ISSUER=idp.issuer, MCP_OIDC_AUDIENCE="https://mcp.example.com/mcp") as url:
        elsewhere = idp.mint(audience="https://other.example.com/mcp", scope=DEMO_SCOPE)
        ours = idp.mint(audience="https://mcp.example.com/mcp", scope=DEMO_SCOPE)
        async with httpx.AsyncClient() as http:
            refused = await http.post(
                url, json=jsonrpc("tools/list"), headers={**MCP_HEADERS, "Authorization": f"Bearer {elsewhere}"}
            )
            accepted = await http.post(
                url, json=jsonrpc("tools/list"), headers={**MCP_HEADERS, "Authorization": f"Bearer {ours}"}
            )
    assert refused.status_code == 401 and refused.json()["message"] == "Invalid JWT"
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert (
        f'resource_metadata="{url.removesuffix("/mcp")}/.well-known/oauth-protected-resource/mcp"'
        in (refused.headers["www-authenticate"])
    )
    assert accepted.status_code == 200
