"""The example tools through the real app: identity, upstream calls with the service token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Protocol

import mcp_auth
import pytest
from fastmcp.exceptions import ToolError
from mcp_auth.config import ProjectInfo, load_settings
from mcp_auth.testing.clients import mcp_client, running
from mcp_auth.testing.loopback import LoopbackServer
from mcp_auth.testing.plugin import AppFactory
from mcp_auth.testing.settings import DEMO_BEARER
from starlette.applications import Starlette

UPSTREAM_TOKEN = "upstream-token-for-tests-0001"
AUTH = {"Authorization": f"Bearer {DEMO_BEARER}"}


class AppFor(Protocol):
    def __call__(self, **env: str) -> Starlette: ...


@pytest.fixture
def app_for(project: ProjectInfo, create_app: AppFactory) -> AppFor:
    """``app_for(**env)``: the project's app in bearer mode with the env store, plus ``env``."""

    def build(**env: str) -> Starlette:
        base = {
            "MCP_AUTH_MODE": "bearer",
            "MCP_TOKEN_STORE": "env",
            "MCP_BEARER_TOKENS": f"ci-bot={DEMO_BEARER}",
            project.service_token_env: UPSTREAM_TOKEN,
        }
        return create_app(load_settings(project, environ={**base, **env}))

    return build


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, str]]]:
    """A loopback upstream API that records the Authorization header it was sent."""
    seen: list[dict[str, str]] = []

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        seen.append(headers)
        if path == "/whoami":
            return 200, {"name": "upstream-user"}
        if path == "/denied":
            return 403, {"message": "forbidden"}
        return 404, {"message": "no such path"}

    server = LoopbackServer(handle).start()
    monkeypatch.setenv("UPSTREAM_BASE_URL", server.url)
    yield seen
    server.stop()


async def test_whoami_returns_identity_without_secrets(app_for: AppFor) -> None:
    app = app_for()
    async with running(app), mcp_client(app, AUTH) as client:
        result = await client.call_tool("whoami", {})
    assert result.data == {"identity": "ci-bot", "auth_method": "bearer", "email": None}
    assert UPSTREAM_TOKEN not in json.dumps(result.structured_content)


async def test_upstream_call_sends_the_service_token_not_the_callers(
    app_for: AppFor, upstream: list[dict[str, str]]
) -> None:
    app = app_for()
    async with running(app), mcp_client(app, AUTH) as client:
        result = await client.call_tool("upstream_get", {"path": "/whoami"})
    assert result.structured_content == {"name": "upstream-user"}
    assert upstream[-1]["authorization"] == f"Bearer {UPSTREAM_TOKEN}"


async def test_upstream_errors_become_clear_tool_errors(app_for: AppFor, upstream: list[dict[str, str]]) -> None:
    app = app_for()
    async with running(app), mcp_client(app, AUTH) as client:
        with pytest.raises(ToolError, match="rejected the service token"):
            await client.call_tool("upstream_get", {"path": "/denied"})
        with pytest.raises(ToolError, match="HTTP 404"):
            await client.call_tool("upstream_get", {"path": "/missing"})
        with pytest.raises(ToolError, match="starting with a single '/'"):
            await client.call_tool("upstream_get", {"path": "//evil.example.com/x"})


@pytest.fixture
def api_paths(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A loopback upstream whose API lives under /api/v1; records every path it was asked for."""
    seen: list[str] = []

    def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        seen.append(path)
        return 200, {"path": path}

    server = LoopbackServer(handle).start()
    monkeypatch.setenv("UPSTREAM_BASE_URL", server.url + "/api/v1")
    yield seen
    server.stop()


LEAVING_PATHS = [
    "/../../x",
    "/a/../../x",
    "/a/./b",
    "/.",
    "/%2e%2e/x",
    "/%2E%2E/%2e%2E/x",
    "/%252e%252e/x",
    "/a%2f..%2f..%2fx",
    "/..%5cx",
    "/x\r\nHost: evil.example",
]


async def test_paths_leaving_the_base_url_are_refused_before_any_request(app_for: AppFor, api_paths: list[str]) -> None:
    app = app_for()
    async with running(app), mcp_client(app, AUTH) as client:
        for path in LEAVING_PATHS:
            with pytest.raises(ToolError) as caught:
                await client.call_tool("upstream_get", {"path": path})
            assert UPSTREAM_TOKEN not in str(caught.value)
    assert api_paths == [], "the service token never left for a path outside the API"


async def test_paths_under_the_base_url_still_work(app_for: AppFor, api_paths: list[str]) -> None:
    app = app_for()
    async with running(app), mcp_client(app, AUTH) as client:
        result = await client.call_tool("upstream_get", {"path": "/docs/v1.2/x..y?q=../z"})
    assert api_paths == ["/api/v1/docs/v1.2/x..y?q=../z"]
    assert result.structured_content == {"path": "/api/v1/docs/v1.2/x..y?q=../z"}


async def test_unreachable_upstream_is_a_tool_error(app_for: AppFor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_BASE_URL", "http://127.0.0.1:9")
    app = app_for()
    async with running(app), mcp_client(app, AUTH) as client:
        with pytest.raises(ToolError, match="unreachable") as caught:
            await client.call_tool("upstream_get", {"path": "/whoami"})
    assert UPSTREAM_TOKEN not in str(caught.value)


async def test_baked_defaults_are_the_env_defaults(project: ProjectInfo) -> None:
    settings = load_settings(project, environ={})
    assert settings.auth_mode == project.default_auth_mode
    assert settings.token_store == project.default_token_store
    assert settings.port == project.default_port


@pytest.mark.usefixtures("token_functions_state")
async def test_package_level_api_knows_this_projects_names(
    project: ProjectInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Scripts can call the spec's API once they name the project (the console script does it
    too): ``mcp_auth.configure(PROJECT)`` names the service and its token variable."""
    monkeypatch.setenv("MCP_TOKEN_STORE", "env")
    monkeypatch.setenv(project.service_token_env, "token-for-a-script-123")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    mcp_auth.configure(ProjectInfo(slug="other", service_name="other", service_token_env="OTHER_TOKEN"))
    mcp_auth.configure(project)  # what a script (and the project's CLI) does: name this project
    try:
        assert await mcp_auth.get_token(project.service_name, "default") == "token-for-a-script-123"
    finally:
        await mcp_auth.close()


async def test_whoami_needs_no_upstream_token_and_upstream_get_needs_its_scope(
    app_for: AppFor, project: ProjectInfo, upstream: list[dict[str, str]]
) -> None:
    reader, other = "r" * 40, "o" * 40
    tokens = f"reader[upstream:read]={reader},other[other:scope]={other}"
    app = app_for(MCP_BEARER_TOKENS=tokens, **{project.service_token_env: ""})
    async with running(app):
        async with mcp_client(app, {"Authorization": f"Bearer {other}"}) as client:
            who = await client.call_tool("whoami", {})  # no upstream token is set at all
            listed = {tool.name for tool in await client.list_tools()}
    assert who.data["identity"] == "other" and listed == {"whoami"}
    app = app_for(MCP_BEARER_TOKENS=tokens)
    async with running(app), mcp_client(app, {"Authorization": f"Bearer {reader}"}) as client:
        assert (await client.call_tool("upstream_get", {"path": "/whoami"})).data == {"name": "upstream-user"}


async def test_unexpected_tool_exceptions_are_masked(project: ProjectInfo, create_app: AppFactory) -> None:
    """A tool's own ToolError reaches the caller; any other exception (whose text may hold hosts
    or data) reaches it as a generic error."""
    import importlib

    app_module = importlib.import_module(f"{project.package}.app")
    mcp = app_module.create_mcp()

    def broken() -> str:
        raise RuntimeError("db-primary.internal:5432 refused")

    mcp.tool(broken)
    settings = load_settings(
        project,
        environ={"MCP_AUTH_MODE": "bearer", "MCP_TOKEN_STORE": "env", "MCP_BEARER_TOKENS": f"ci-bot={DEMO_BEARER}"},
    )
    app = mcp_auth.build_http_app(mcp, mcp_auth.Runtime.from_settings(settings))
    async with running(app), mcp_client(app, AUTH) as client:
        result = await client.call_tool("broken", {}, raise_on_error=False)
    assert result.is_error and "db-primary" not in str(result.content)
