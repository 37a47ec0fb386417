"""Turn a FastMCP server into the authenticated HTTP app: /mcp, /health, /status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastmcp import FastMCP
from mcp_auth import token_functions
from mcp_auth.asgi.authentication import PUBLIC_PATHS, AuthenticationMiddleware
from mcp_auth.asgi.observability import ObservabilityMiddleware, ToolCallMetrics
from mcp_auth.asgi.responses import unavailable_body
from mcp_auth.asgi.token_resolution import TokenResolutionMiddleware
from mcp_auth.asgi.tool_authorization import ToolAuthorizationMiddleware
from mcp_auth.discovery import ProtectedResource
from mcp_auth.errors import ServiceUnavailable
from mcp_auth.observability import tracing
from mcp_auth.observability.exporter import MetricsServer, multiprocess_dir
from mcp_auth.observability.metrics import ToolNames
from mcp_auth.runtime import Runtime
from mcp_auth.tool_policies import ToolPolicies
from mcp_auth.upstream_http import UpstreamHttp
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

logger = logging.getLogger("mcp_auth.server")

MCP_PATH = "/mcp"
CHECKPOINT_INTERVAL_SECONDS = 300.0
"""How often a server with a database logs the audit chain's head (``audit checkpoint``)."""


def build_http_app(mcp: FastMCP, runtime: Runtime) -> Starlette:
    """Stateless streamable HTTP (any replica can serve any request), authenticated."""
    resource = runtime.settings.protected_resource()
    policies = ToolPolicies()
    _add_probes(mcp, runtime)
    if resource is not None:
        _add_discovery(mcp, resource, policies)
    tool_names = ToolNames()
    http = UpstreamHttp()
    mcp.add_middleware(ToolCallMetrics(tool_names))
    app = mcp.http_app(
        path=MCP_PATH,
        stateless_http=True,
        json_response=True,
        middleware=_steps(runtime, policies, resource, tool_names, http),
    )
    inner_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(starlette_app: Starlette) -> AsyncIterator[None]:
        await policies.load(mcp)
        tool_names.names = policies.names
        http.open()
        metrics_server = await _start_observability(runtime)
        remove_signal = _install_refresh_signal(runtime)
        # Tools calling mcp_auth.get_token() & co. share the server's store and audit log.
        restore = token_functions.use(runtime.tokens)
        checkpoints = asyncio.get_running_loop().create_task(_log_checkpoints(runtime))
        try:
            async with inner_lifespan(starlette_app):
                yield
        finally:
            checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await checkpoints
            restore()
            await http.close()
            remove_signal()
            if metrics_server is not None:
                await metrics_server.close()
            tracing.flush_tracing()
            await runtime.close()

    app.router.lifespan_context = lifespan
    app.state.runtime = runtime
    return app


def _steps(
    runtime: Runtime,
    policies: ToolPolicies,
    resource: ProtectedResource | None,
    tool_names: ToolNames,
    http: UpstreamHttp,
) -> list[Middleware]:
    """Observe, authenticate (and rate-limit), authorize the tool, resolve its upstream token."""
    public = PUBLIC_PATHS | (resource.paths if resource else frozenset())
    return [
        Middleware(ObservabilityMiddleware),
        Middleware(
            AuthenticationMiddleware,
            authenticator=runtime.authenticator,
            service=runtime.settings.service_name,
            policies=policies,
            public_paths=public,
            resource=resource,
            rate_limits=runtime.settings.rate_limits(),
            http=http,
        ),
        Middleware(
            ToolAuthorizationMiddleware,
            policies=policies,
            public_paths=public,
            resource=resource,
            tool_names=tool_names,
        ),
        Middleware(TokenResolutionMiddleware, tokens=runtime.tokens, tool_names=tool_names),
    ]


def _add_discovery(mcp: FastMCP, resource: ProtectedResource, policies: ToolPolicies) -> None:
    """RFC 9728 metadata, public, at the bare and the path-inserted well-known URL. CORS-open:
    browser-based MCP clients (the MCP Inspector) read it from another origin."""

    async def metadata(request: Request) -> Response:
        headers = {"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=3600"}
        if request.method == "OPTIONS":
            headers |= {"Access-Control-Allow-Methods": "GET, OPTIONS", "Access-Control-Allow-Headers": "*"}
            return Response(status_code=204, headers=headers)
        return JSONResponse(resource.document(policies.scopes_supported), headers=headers)

    for path in sorted(resource.paths):
        mcp.custom_route(path, methods=["GET", "OPTIONS"], include_in_schema=False)(metadata)


def _add_probes(mcp: FastMCP, runtime: Runtime) -> None:
    settings = runtime.settings

    @mcp.custom_route("/health", methods=["GET"], include_in_schema=False)
    async def health(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "status": "ok",
                "service": settings.slug,
                "auth": settings.auth_mode,
                "token_storage": settings.token_store,
            }
        )

    @mcp.custom_route("/status", methods=["GET"], include_in_schema=False)
    async def status(request: Request) -> JSONResponse:
        try:
            await runtime.check()
        except ServiceUnavailable as exc:
            # The public body names the component; the log line keeps hosts and ids.
            return JSONResponse(unavailable_body(exc.message), status_code=503)
        return JSONResponse({"status": "ready", "service": settings.slug, "token_storage": settings.token_store})


async def _start_observability(runtime: Runtime) -> MetricsServer | None:
    """Tracing export (OTEL_EXPORTER_OTLP_ENDPOINT) and the /metrics listener (MCP_METRICS_PORT,
    on MCP_HOST): both only when configured."""
    settings = runtime.settings
    tracing.configure_tracing(settings.otel_endpoint, settings.slug)
    if settings.metrics_port is None:
        return None
    server = MetricsServer(settings.host, settings.metrics_port, directory=multiprocess_dir())
    await server.start()
    return server


async def _log_checkpoints(runtime: Runtime) -> None:
    if runtime.backend.audit_head is None:
        return
    while True:
        await runtime.log_audit_checkpoint()
        await asyncio.sleep(CHECKPOINT_INTERVAL_SECONDS)


def _install_refresh_signal(runtime: Runtime) -> Callable[[], None]:
    """SIGHUP drops cached tokens (Infisical) so a rotated secret is used without a restart.
    Returns the function that removes the handler again."""
    invalidate = getattr(runtime.tokens.store, "invalidate", None)
    if invalidate is None:
        return lambda: None

    def on_hup() -> None:
        logger.info("SIGHUP: token cache cleared")
        invalidate()

    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
        return lambda: None

    def remove() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return remove
