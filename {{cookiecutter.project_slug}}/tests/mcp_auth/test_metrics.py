"""Prometheus metrics: served only on MCP_METRICS_PORT, bounded labels, no secrets, several
processes summed through PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp_auth.asgi.authentication import failure_reason
from mcp_auth.crypto import generate_key
from mcp_auth.errors import AuthenticationFailed, ConfigError, McpAuthError, ServiceUnavailable
from mcp_auth.observability import metrics
from mcp_auth.observability.exporter import MetricsServer, multiprocess_dir, render
from mcp_auth.runtime import Runtime
from mcp_auth.testing.apps import DEMO_TOKEN, demo_app
from mcp_auth.testing.clients import MCP_HEADERS, jsonrpc, mcp_client, running
from mcp_auth.testing.processes import free_port
from mcp_auth.testing.settings import DEMO_BEARER, make_settings
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette

TOKEN = DEMO_TOKEN
WRONG = "wrong-bearer-token-000000000000000000"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def scrape(port: int, path: str = "/metrics") -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(f"http://127.0.0.1:{port}{path}")


async def exercise(http: httpx.AsyncClient, app: Starlette) -> None:
    """Two refused requests, a probe, an unknown path and three tool calls (one unknown tool)."""
    assert (await http.get("/health")).status_code == 200
    assert (await http.post("/mcp", json=jsonrpc("tools/list"), headers=MCP_HEADERS)).status_code == 401
    wrong = {**MCP_HEADERS, "Authorization": f"Bearer {WRONG}"}
    assert (await http.post("/mcp", json=jsonrpc("tools/list"), headers=wrong)).status_code == 401
    assert (await http.get(f"/{TOKEN}", headers={"Authorization": f"Bearer {DEMO_BEARER}"})).status_code == 404
    async with mcp_client(app, {"Authorization": f"Bearer {DEMO_BEARER}"}) as client:
        await client.call_tool("whoami", {})
        assert (await client.call_tool("token_suffix", {})).data == "default:42"
        with pytest.raises(Exception, match="Unknown tool"):
            await client.call_tool(f"tool-{TOKEN}", {})


async def test_metrics_port_reports_requests_tools_failures_and_store_latency() -> None:
    port = free_port()
    app = demo_app(MCP_METRICS_PORT=str(port))
    async with running(app) as http:
        before = parse((await scrape(port)).text)
        await exercise(http, app)
        response = await scrape(port)
        # Not on the MCP port: anonymous is a 401, an authenticated caller gets a 404.
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers={"Authorization": f"Bearer {DEMO_BEARER}"})).status_code == 404
        assert (await scrape(port, "/other")).status_code == 404
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = parse(response.text)
    assert delta(before, after, "mcp_http_requests_total", method="GET", path="/health", status="200") == 1
    assert delta(before, after, "mcp_http_requests_total", method="POST", path="/mcp", status="401") == 2
    assert delta(before, after, "mcp_http_requests_total", method="GET", path="other", status="404") == 1
    assert delta(before, after, "mcp_auth_failures_total", reason="missing") == 1
    assert delta(before, after, "mcp_auth_failures_total", reason="invalid_bearer") == 1
    assert delta(before, after, "mcp_tool_calls_total", tool="whoami", outcome="success") == 1
    assert delta(before, after, "mcp_tool_calls_total", tool="token_suffix", outcome="success") == 1
    assert delta(before, after, "mcp_tool_calls_total", tool="other", outcome="not_found") == 1
    assert delta(before, after, "mcp_token_store_duration_seconds_count", store="env", operation="get") >= 1
    assert_no_secrets(response.text)
    with pytest.raises(httpx.ConnectError):  # stopped with the app's lifespan
        await scrape(port)


def assert_no_secrets(text: str) -> None:
    for secret in (TOKEN, DEMO_BEARER, WRONG, "ci-bot"):
        assert secret not in text
    allowed = {
        "path": metrics.PATHS | {metrics.OTHER},
        "reason": set(metrics.AUTH_FAILURE_REASONS),
        "method": {"GET", "POST", "DELETE", "HEAD", "OPTIONS", metrics.OTHER},
        "outcome": {"success", "error", "not_found", "unavailable", "forbidden"},
    }
    # The registry is the process's: tool names of other tests' servers appear too (all registered names).
    for (_name, labels), _value in parse(text).items():
        for label, value in labels:
            assert value in allowed.get(label, {value}), (label, value)


async def test_no_metrics_listener_without_the_port_and_503s_are_counted() -> None:
    app = demo_app(DEMO_API_TOKEN="")  # no upstream token: tools/call answers 503 before dispatch
    labels = {"tool": "token_suffix", "outcome": "unavailable"}
    before = REGISTRY.get_sample_value("mcp_tool_calls_total", labels) or 0.0
    async with running(app) as http:
        assert (await http.get("/metrics")).status_code == 401
        call = jsonrpc("tools/call", {"name": "token_suffix", "arguments": {}})
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {DEMO_BEARER}"}
        assert (await http.post("/mcp", json=call, headers=headers)).status_code == 503
    assert REGISTRY.get_sample_value("mcp_tool_calls_total", labels) == before + 1


@pytest.mark.parametrize(
    ("error", "headers", "reason"),
    [
        (AuthenticationFailed("Authentication required: send Authorization: Bearer <token>"), {}, "missing"),
        (AuthenticationFailed("Invalid JWT", "Signature has expired"), {"cf-access-jwt-assertion": "x"}, "invalid_jwt"),
        (AuthenticationFailed("Invalid bearer token"), {"authorization": f"Bearer {WRONG}"}, "invalid_bearer"),
        (AuthenticationFailed("Invalid API key"), {"authorization": "Bearer mcpk_abc"}, "invalid_api_key"),
        (AuthenticationFailed("Send one credential: ...", "duplicate authorization header"), None, "duplicate"),
        (AuthenticationFailed("Bearer tokens are not accepted (MCP_AUTH_MODE=cloudflare): ..."), {}, "not_accepted"),
        (ServiceUnavailable("Cloudflare Access certificates unavailable"), {}, "unavailable"),
    ],
)
def test_authentication_failures_map_to_fixed_reasons(
    error: McpAuthError, headers: dict[str, str] | None, reason: str
) -> None:
    assert failure_reason(error, headers) == reason
    assert reason in metrics.AUTH_FAILURE_REASONS


async def test_database_store_latency_audit_writes_and_rotation_are_timed(sqlite_url: str) -> None:
    key = generate_key()
    app = demo_app(DATABASE_URL=sqlite_url, MCP_TOKEN_STORE="postgres", MCP_AUTH_ENCRYPTION_KEY=key)
    runtime: Runtime = app.state.runtime
    names = ("mcp_token_store_duration_seconds_count", "mcp_audit_write_duration_seconds_count")
    labels: list[dict[str, str]] = [{"store": "postgres", "operation": "get"}, {"sink": "database"}]
    rotation = ("mcp_key_rotation_duration_seconds_count", {"result": "success"})
    before = [REGISTRY.get_sample_value(name, label) or 0.0 for name, label in [*zip(names, labels), rotation]]
    async with running(app):
        await runtime.tokens.set("demo", "default", TOKEN)
        async with mcp_client(app, {"Authorization": f"Bearer {DEMO_BEARER}"}) as client:
            assert (await client.call_tool("token_suffix", {})).data == "default:42"
        assert await runtime.tokens.rotate_key(key, generate_key()) == 1
    after = [REGISTRY.get_sample_value(name, label) or 0.0 for name, label in [*zip(names, labels), rotation]]
    gets, audits, rotations = (a - b for a, b in zip(after, before, strict=True))
    assert gets == 1  # the caller's own key, else "default": one audited read
    assert audits >= 3 and rotations == 1  # set, the hand-out, the rotation


_WORKER = """
import importlib.util, sys
# The metrics module alone (it needs only prometheus-client): a worker that starts in 0.1 s.
spec = importlib.util.spec_from_file_location("metrics", sys.argv[1])
metrics = sys.modules["metrics"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(metrics)
metrics.ToolNames(["whoami"]).record("whoami", "success")
metrics.record_auth_failure("invalid_jwt")
with metrics.timed("token_store", "postgres", "get"):
    pass
"""


@pytest.fixture
def two_workers(tmp_path: Path) -> Path:
    """A PROMETHEUS_MULTIPROC_DIR two worker processes have each recorded the same events into."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER, metrics.__file__], env=env) for _ in range(2)]
    assert [worker.wait(timeout=30) for worker in workers] == [0, 0]
    assert len(list(tmp_path.glob("*.db"))) >= 2  # one file per process and metric type
    return tmp_path


async def test_several_processes_are_summed_through_the_multiprocess_directory(two_workers: Path) -> None:
    tmp_path = two_workers
    samples = parse(render("", tmp_path)[0].decode())
    assert samples[("mcp_tool_calls_total", (("outcome", "success"), ("tool", "whoami")))] == 2
    assert samples[("mcp_auth_failures_total", (("reason", "invalid_jwt"),))] == 2
    assert samples[("mcp_token_store_duration_seconds_count", (("operation", "get"), ("store", "postgres")))] == 2
    # Every worker binds the port (SO_REUSEPORT) and answers with the same sum.
    port = free_port()
    servers = [MetricsServer("127.0.0.1", port, directory=tmp_path) for _ in range(2)]
    for server in servers:
        await server.start()
    try:
        answers = await asyncio.gather(scrape(port), scrape(port))
    finally:
        for server in servers:
            await server.close()
    for answer in answers:
        assert parse(answer.text)[("mcp_auth_failures_total", (("reason", "invalid_jwt"),))] == 2


def test_multiprocess_directory_must_exist(tmp_path: Path) -> None:
    assert multiprocess_dir({}) is None
    assert multiprocess_dir({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}) == tmp_path
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR must be an existing"):
        multiprocess_dir({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MCP_METRICS_PORT": "8080", "MCP_PORT": "8080"}, "MCP_METRICS_PORT must differ from MCP_PORT"),
        ({"MCP_METRICS_PORT": "0"}, "MCP_METRICS_PORT"),
        ({"MCP_METRICS_PORT": "65536"}, "MCP_METRICS_PORT"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT must be an http"),
    ],
)
def test_observability_settings_are_validated(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_settings(MCP_AUTH_MODE="bearer", MCP_BEARER_TOKENS=f"ci={DEMO_BEARER}", **env).validate_startup()


def test_blank_metrics_port_is_off() -> None:
    settings: Any = make_settings(MCP_METRICS_PORT=" ", OTEL_EXPORTER_OTLP_ENDPOINT="")
    assert settings.metrics_port is None and settings.otel_endpoint is None
