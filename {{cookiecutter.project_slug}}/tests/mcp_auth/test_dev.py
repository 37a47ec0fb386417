"""``<slug> dev``: the console script as an MCP client launches it (stdio), with the local
development identity, loudly labelled; and its refusal to listen beyond loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastmcp import Client
from fastmcp.client.transports import StdioTransport
from mcp_auth.config import ProjectInfo
from mcp_auth.testing.processes import clean_environ, console_script, run_console_script

UPSTREAM_TOKEN = "dev-upstream-token-0123456789"


def stdio_client(project: ProjectInfo, *args: str, log: Path) -> Client[StdioTransport]:
    command, *prefix = console_script(project)
    # The upstream is a closed loopback port: a call of upstream_get fails after its token is handed out.
    env = clean_environ({project.service_token_env: UPSTREAM_TOKEN, "UPSTREAM_BASE_URL": "http://127.0.0.1:9"})
    transport = StdioTransport(command, [*prefix, "dev", *args], env=env, keep_alive=False, log_file=log)
    return Client(transport)


def assert_labelled(stderr: str) -> None:
    """The banner, then only JSON log lines, each marked as development."""
    assert "DEVELOPMENT MODE" in stderr and "NO AUTHENTICATION" in stderr
    logs = [line for line in stderr.splitlines() if line.startswith("{")]
    assert logs, stderr
    assert all(json.loads(line)["mode"] == "development" for line in logs)
    assert UPSTREAM_TOKEN not in stderr


async def test_stdio_round_trip_with_the_dev_identity(project: ProjectInfo, tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"
    async with stdio_client(project, log=log) as client:
        result = await client.call_tool("whoami", {})
        audited_before_upstream = log.read_text().count('"audit"')
        upstream = await client.call_tool("upstream_get", {"path": "/whoami"}, raise_on_error=False)
    assert result.structured_content == {
        "identity": "developer@localhost",
        "auth_method": "dev",
        "email": "developer@localhost",
    }
    assert audited_before_upstream == 0  # whoami never touches the token store
    assert upstream.is_error and "unreachable" in str(upstream.content)
    stderr = log.read_text()
    assert_labelled(stderr)
    audit = [json.loads(line)["audit"] for line in stderr.splitlines() if '"audit"' in line]
    assert [(row["user_email"], row["tool"], row["result"]) for row in audit] == [
        ("developer@localhost", "upstream_get", "success")
    ]


@pytest.mark.parametrize("host", ["0.0.0.0"])
def test_a_non_loopback_bind_is_refused(project: ProjectInfo, host: str) -> None:
    result = run_console_script(project, "dev", "--http", "--host", host, env={}, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: dev serves loopback only: --host {host} is not a loopback address (use 'serve' with authentication)"
    ]


async def test_dev_http_serves_loopback_host_names_only() -> None:
    """No authentication in dev mode: a page whose name rebinds to 127.0.0.1 gets no answer."""
    import httpx
    from fastmcp import FastMCP
    from mcp_auth.backend import open_backend
    from mcp_auth.cli.dev import DevAuthenticator, dev_http_app
    from mcp_auth.identity import Identity
    from mcp_auth.runtime import Runtime
    from mcp_auth.testing.settings import make_settings

    settings = make_settings(MCP_AUTH_MODE="bearer", MCP_BEARER_TOKENS=f"ci={'x' * 40}")
    caller = Identity(subject="developer@localhost", method="dev")
    runtime = Runtime(settings=settings, authenticator=DevAuthenticator(caller), backend=open_backend(settings))
    app = dev_http_app(FastMCP("demo"), runtime)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
        for host in ("127.0.0.1:8080", "localhost:8080", "localhost"):
            assert (await client.get(f"http://{host}/health")).status_code == 200, host
        for host in ("attacker.example:8080", "127.0.0.1.nip.io:8080", "localhost.attacker.example"):
            assert (await client.get(f"http://{host}/health")).status_code == 400, host
    await runtime.close()
