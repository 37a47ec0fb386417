"""Request metrics and the request's trace span (outermost ASGI step), and tool-call metrics
(a FastMCP middleware, so it sees each call's real outcome)."""

from __future__ import annotations

import time

import mcp_types as mt
from fastmcp.exceptions import NotFoundError
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import ToolResult
from mcp_auth.observability import metrics, tracing
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TRACE_HEADERS = (b"traceparent", b"tracestate", b"baggage")


class ObservabilityMiddleware:
    """Counts every HTTP request by method, path template and status; times it; and opens the
    request's SERVER span (continuing an incoming ``traceparent``), which the authentication,
    token resolution, audit and FastMCP spans nest under."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, route = metrics.method_label(scope["method"]), metrics.path_label(scope["path"])
        carrier = {
            name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"] if name in TRACE_HEADERS
        }
        status = 500  # an exception escaping the app becomes a 500 further out
        start = time.perf_counter()

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        name = method if route == metrics.OTHER else f"{method} {route}"
        attributes = {"http.request.method": method, "http.route": route}
        with tracing.server_span(name, carrier, attributes) as span:
            try:
                await self.app(scope, receive, observed)
            finally:
                metrics.record_request(method, route, status, time.perf_counter() - start)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    tracing.fail(span, f"HTTP {status}")


class ToolCallMetrics(Middleware):
    """``mcp_tool_calls_total``: every tools/call FastMCP dispatches, by tool and outcome."""

    def __init__(self, tools: metrics.ToolNames) -> None:
        self.tools = tools

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        name = context.message.name
        try:
            result = await call_next(context)
        except NotFoundError:
            self.tools.record(None, "not_found")
            raise
        except Exception:
            self.tools.record(name, "error")
            raise
        self.tools.record(name, "error" if result.is_error else "success")
        return result
