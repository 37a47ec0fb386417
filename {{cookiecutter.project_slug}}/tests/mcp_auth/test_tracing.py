"""Spans: authentication, token resolution and the audit write nest under the request's span
with FastMCP's, carry the caller's subject and the tool, and never a credential or token."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from mcp_auth.observability import tracing
from mcp_auth.testing.apps import DEMO_TOKEN, demo_app
from mcp_auth.testing.clients import MCP_HEADERS, jsonrpc, mcp_client, running
from mcp_auth.testing.settings import DEMO_BEARER
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

TOKEN = DEMO_TOKEN
WRONG = "wrong-bearer-token-000000000000000000"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """An SDK provider exporting to memory, installed for this test only (the API's global
    provider can be set once per process, so it is swapped in and put back)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", provider)
    yield exporter
    provider.shutdown()


def by_name(finished: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [span for span in finished if span.name == name]
    assert found, f"no {name} span in {[span.name for span in finished]}"
    return found[-1]


def assert_no_secrets(finished: Sequence[ReadableSpan]) -> None:
    text = "".join(span.to_json() for span in finished)
    for secret in (TOKEN, DEMO_BEARER, WRONG):
        assert secret not in text


async def test_a_tool_call_is_traced_without_secrets(spans: InMemorySpanExporter) -> None:
    app = demo_app()
    async with running(app):
        async with mcp_client(app, {"Authorization": f"Bearer {DEMO_BEARER}"}) as client:
            assert (await client.call_tool("token_suffix", {})).data == "default:42"
    finished = spans.get_finished_spans()
    resolve = by_name(finished, "mcp_auth.resolve_token")
    assert resolve.attributes is not None and resolve.context is not None
    assert dict(resolve.attributes) == {
        "enduser.id": "ci-bot",
        "gen_ai.tool.name": "token_suffix",
        "mcp_auth.service": "demo",
        "mcp_auth.token_store": "env",
        "mcp_auth.token.key": "default",
    }
    trace_id = resolve.context.trace_id
    same_trace = [span for span in finished if span.context is not None and span.context.trace_id == trace_id]
    names = {span.name for span in same_trace}
    assert {"POST /mcp", "mcp_auth.authenticate", "mcp_auth.token_store.get", "mcp_auth.audit.write"} <= names
    fastmcp = [
        span for span in same_trace if span.instrumentation_scope and span.instrumentation_scope.name == "fastmcp"
    ]
    assert any((span.attributes or {}).get("gen_ai.tool.name") == "token_suffix" for span in fastmcp)
    authenticate = by_name(same_trace, "mcp_auth.authenticate")
    assert authenticate.attributes is not None
    assert authenticate.attributes["enduser.id"] == "ci-bot"
    assert authenticate.attributes["mcp_auth.auth.method"] == "bearer"
    request = by_name(same_trace, "POST /mcp")
    assert request.attributes is not None and request.attributes["http.response.status_code"] == 200
    assert request.attributes["enduser.id"] == "ci-bot"
    audit = by_name(same_trace, "mcp_auth.audit.write")
    assert audit.attributes is not None and audit.attributes["mcp_auth.audit.action"] == "get_token"
    assert_no_secrets(finished)


async def test_a_refused_request_continues_the_callers_trace(spans: InMemorySpanExporter) -> None:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {WRONG}", "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"}
    async with running(demo_app()) as http:
        assert (await http.post("/mcp", json=jsonrpc("tools/list"), headers=headers)).status_code == 401
    finished = spans.get_finished_spans()
    authenticate = by_name(finished, "mcp_auth.authenticate")
    assert authenticate.context is not None and f"{authenticate.context.trace_id:032x}" == TRACE_ID
    assert authenticate.attributes is not None
    assert authenticate.attributes["mcp_auth.auth.failure_reason"] == "invalid_bearer"
    assert "enduser.id" not in authenticate.attributes
    assert not authenticate.status.is_ok
    assert_no_secrets(finished)


def test_tracing_is_not_configured_without_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_installed", False)
    installed: list[Any] = []
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    assert tracing.configure_tracing(None, "demo-mcp") is False
    assert installed == []


def test_an_endpoint_without_the_otel_extra_is_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tracing, "_installed", False)
    monkeypatch.setattr(tracing, "OTLP_EXPORTER_MODULE", "mcp_auth_tests_no_such_module")
    with caplog.at_level(logging.WARNING, logger="mcp_auth.tracing"):
        assert tracing.configure_tracing("http://collector:4318", "demo-mcp") is False
    assert [record.getMessage() for record in caplog.records] == [
        "OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed: no spans are exported "
        "(install the project with its otel extra, e.g. uv sync --extra otel)"
    ]


def test_an_endpoint_installs_the_otlp_exporter_named_after_the_project(monkeypatch: pytest.MonkeyPatch) -> None:
    exporters: list[InMemorySpanExporter] = []
    endpoints: list[str] = []

    def otlp_exporter(endpoint: str) -> InMemorySpanExporter:
        endpoints.append(endpoint)
        exporters.append(InMemorySpanExporter())
        return exporters[-1]

    installed: list[TracerProvider] = []
    monkeypatch.setattr(tracing, "_installed", False)
    monkeypatch.setitem(sys.modules, "mcp_auth_tests_otlp", SimpleNamespace(OTLPSpanExporter=otlp_exporter))
    monkeypatch.setattr(tracing, "OTLP_EXPORTER_MODULE", "mcp_auth_tests_otlp")
    monkeypatch.setattr(trace, "set_tracer_provider", installed.append)
    assert tracing.configure_tracing("http://collector:4318/", "demo-mcp") is True
    assert endpoints == ["http://collector:4318/v1/traces"]
    assert installed[0].resource.attributes["service.name"] == "demo-mcp"
    assert tracing.configure_tracing("http://collector:4318/", "demo-mcp") is True  # once per process
    assert len(installed) == 1
    installed[0].shutdown()
