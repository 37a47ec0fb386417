"""The console script as the container runs it: a real uvicorn process and a real MCP client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from mcp_auth.config import ProjectInfo
from mcp_auth.testing.processes import DrainedProcess, free_port, start_console_script, wait_healthy
from mcp_auth.testing.settings import DEMO_BEARER

UPSTREAM_TOKEN = "process-test-upstream-token-9"


@dataclass(frozen=True)
class Server:
    url: str
    process: DrainedProcess


@pytest.fixture(scope="module")  # one process: FastMCP alone takes seconds to import
def server(project: ProjectInfo) -> Iterator[Server]:
    """Shared by the tests below, none of which stops it: its output is drained by a thread and
    read while it keeps running, so the tests pass in any order."""
    port = free_port()
    env = {
        "MCP_HOST": "127.0.0.1",
        "MCP_PORT": str(port),
        "MCP_AUTH_MODE": "bearer",
        "MCP_TOKEN_STORE": "env",
        "MCP_BEARER_TOKENS": f"ci-bot={DEMO_BEARER}",
        project.service_token_env: UPSTREAM_TOKEN,
    }
    with start_console_script(project, "serve", env=env) as process:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process)
        yield Server(url, process)


def log_lines(process: DrainedProcess) -> list[dict[str, Any]]:
    """Every line so far, parsed: any line that is not JSON fails the test."""
    return [json.loads(line) for line in process.lines if line.strip()]


async def test_real_client_calls_a_tool_over_http(server: Server) -> None:
    transport = StreamableHttpTransport(f"{server.url}/mcp", headers={"Authorization": f"Bearer {DEMO_BEARER}"})
    async with Client(transport) as client:
        tools = {tool.name for tool in await client.list_tools()}
        who = await client.call_tool("whoami", {})
    assert {"whoami", "upstream_get"} <= tools
    assert who.data["identity"] == "ci-bot"


def test_unauthenticated_request_gets_401_json(server: Server) -> None:
    response = httpx.post(f"{server.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_logs_are_json_and_hold_no_secrets(server: Server) -> None:
    """Reads what the shared server logged so far (drained continuously), without stopping it."""
    url = server.url
    httpx.post(f"{url}/mcp", json={}, headers={"Authorization": "Bearer wrong-token-000000000000"})
    failing_tool = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "upstream_get", "arguments": {"path": "x"}},
    }
    headers = {"Authorization": f"Bearer {DEMO_BEARER}", "Accept": "application/json, text/event-stream"}
    assert httpx.post(f"{url}/mcp", json=failing_tool, headers=headers).json()["result"]["isError"] is True

    def logged_both(raw: list[str]) -> bool:
        lines = [json.loads(line) for line in raw if line.strip()]  # every line is JSON
        rejected = any(line["message"] == "authentication rejected" for line in lines)
        return rejected and any(line["logger"].startswith("fastmcp") for line in lines)

    server.process.wait_for(logged_both)
    lines = log_lines(server.process)
    assert any(line["message"] == "authentication rejected" for line in lines)
    assert any(line["logger"].startswith("fastmcp") for line in lines), "FastMCP's own logs are JSON too"
    output = server.process.output
    for secret in (DEMO_BEARER, UPSTREAM_TOKEN, "wrong-token-000000000000"):
        assert secret not in output


def test_misconfigured_auth_refuses_to_start_with_one_line(project: ProjectInfo) -> None:
    env = {"MCP_AUTH_MODE": "cloudflare", "MCP_PORT": str(free_port())}
    with start_console_script(project, "serve", env=env) as process:
        returncode = process.wait(timeout=20)
        output = process.output
    assert returncode == 1
    assert output.strip().splitlines() == [output.strip()]
    assert "CF_ACCESS_TEAM_DOMAIN" in output and "Traceback" not in output
