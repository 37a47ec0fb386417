"""The console script as the container runs it: a real uvicorn process and a real MCP client."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport
from mcp_auth.testing.settings import DEMO_BEARER

from {{ cookiecutter.package_name }}.project import PROJECT

UPSTREAM_TOKEN = "process-test-upstream-token-9"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def console_script() -> list[str]:
    script = Path(sys.executable).parent / PROJECT.slug
    if script.exists():
        return [str(script)]
    found = shutil.which(PROJECT.slug)
    return [found] if found else [sys.executable, "-m", "{{ cookiecutter.package_name }}"]


def start(env: dict[str, str]) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_", "CF_ACCESS_", "INFISICAL_"))}
    clean.pop("DATABASE_URL", None)
    return subprocess.Popen(
        [*console_script(), "serve"],
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_healthy(url: str, process: subprocess.Popen[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"server exited {process.returncode}: {process.stdout.read() if process.stdout else ''}"
            )
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("server did not become healthy")


@pytest.fixture(scope="module")  # one process: FastMCP alone takes seconds to import
def server() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    process = start(
        {
            "MCP_HOST": "127.0.0.1",
            "MCP_PORT": str(port),
            "MCP_AUTH_MODE": "bearer",
            "MCP_TOKEN_STORE": "env",
            "MCP_BEARER_TOKENS": f"ci-bot={DEMO_BEARER}",
            PROJECT.service_token_env: UPSTREAM_TOKEN,
        }
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_real_client_calls_a_tool_over_http(server: tuple[str, subprocess.Popen[str]]) -> None:
    url, _ = server
    transport = StreamableHttpTransport(f"{url}/mcp", headers={"Authorization": f"Bearer {DEMO_BEARER}"})
    async with Client(transport) as client:
        tools = {tool.name for tool in await client.list_tools()}
        who = await client.call_tool("whoami", {})
    assert {"whoami", "upstream_get"} <= tools
    assert who.data["identity"] == "ci-bot"


def test_unauthenticated_request_gets_401_json(server: tuple[str, subprocess.Popen[str]]) -> None:
    url, _ = server
    response = httpx.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_logs_are_json_and_hold_no_secrets(server: tuple[str, subprocess.Popen[str]]) -> None:
    """Runs last against the shared process: it stops the server to read everything it logged."""
    url, process = server
    httpx.post(f"{url}/mcp", json={}, headers={"Authorization": "Bearer wrong-token-000000000000"})
    failing_tool = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "upstream_get", "arguments": {"path": "x"}},
    }
    headers = {"Authorization": f"Bearer {DEMO_BEARER}", "Accept": "application/json, text/event-stream"}
    assert httpx.post(f"{url}/mcp", json=failing_tool, headers=headers).json()["result"]["isError"] is True
    process.terminate()
    output = process.communicate(timeout=10)[0]
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]  # every line is JSON
    assert any(line["message"] == "authentication rejected" for line in lines)
    assert any(line["logger"].startswith("fastmcp") for line in lines), "FastMCP's own logs are JSON too"
    for secret in (DEMO_BEARER, UPSTREAM_TOKEN, "wrong-token-000000000000"):
        assert secret not in output


def test_misconfigured_auth_refuses_to_start_with_one_line() -> None:
    process = start({"MCP_AUTH_MODE": "cloudflare", "MCP_PORT": str(free_port())})
    output = process.communicate(timeout=20)[0]
    assert process.returncode == 1
    assert output.strip().splitlines() == [output.strip()]
    assert "CF_ACCESS_TEAM_DOMAIN" in output and "Traceback" not in output
