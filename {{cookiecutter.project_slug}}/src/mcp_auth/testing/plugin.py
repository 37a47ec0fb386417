"""pytest plugin (enabled with ``-p mcp_auth.testing.plugin``): fixtures for mcp_auth's tests
and for the project's own.

The project under test is named in the pytest configuration, so the project's tests hold no
template placeholders::

    [tool.pytest.ini_options]
    mcp_auth_project = "my_pkg.project:PROJECT"        # the ``project`` fixture
    mcp_auth_app_factory = "my_pkg.app:create_app"     # the ``create_app`` fixture
"""

from __future__ import annotations

import compileall
import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import mcp_auth
import pytest
from mcp_auth import token_functions
from mcp_auth.config import McpAuthSettings, ProjectInfo
from mcp_auth.testing.cloudflare import FakeCloudflareAccess
from mcp_auth.testing.database import *  # noqa: F403  (database, database_url, sqlite_url, ...)
from mcp_auth.testing.database import EMBEDDED
from mcp_auth.testing.oidc import FakeAuthorizationServer

if TYPE_CHECKING:  # annotations only: the plugin loads before (and without) FastMCP
    from starlette.applications import Starlette

AppFactory = Callable[[McpAuthSettings], "Starlette"]
"""The project's ``create_app(settings)``."""

PROJECT_OPTION = "mcp_auth_project"
APP_FACTORY_OPTION = "mcp_auth_app_factory"


def pytest_sessionstart(session: pytest.Session) -> None:
    _scrub_environment(session.config)
    _compile_sources(session.config)


def _compile_sources(config: pytest.Config) -> None:
    """Compile mcp_auth's and the project's sources once: the suite starts the console script in
    many subprocesses, and with PYTHONDONTWRITEBYTECODE set (containers, CI images) each of them
    would otherwise recompile every module it imports (about half a second each)."""
    roots = [Path(mcp_auth.__file__).parent]
    spec = str(config.getini(PROJECT_OPTION) or "").partition(":")[0].partition(".")[0]
    found = importlib.util.find_spec(spec) if spec else None
    if found is not None and found.origin is not None:
        roots.append(Path(found.origin).parent)
    for root in roots:
        compileall.compile_dir(root, quiet=1)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which PostgreSQL the run used when it started its own (TEST_DATABASE_URL unset)."""
    for server in EMBEDDED:
        terminalreporter.write_line(
            f"PostgreSQL: embedded server (TEST_DATABASE_URL unset), started in {server.started_in or 0:.1f}s"
        )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(PROJECT_OPTION, 'The project\'s ProjectInfo, as "module:attribute" (the `project` fixture).')
    parser.addini(APP_FACTORY_OPTION, 'The project\'s app factory, as "module:attribute" (the `create_app` fixture).')


def load_object(spec: str, *, option: str) -> object:
    """The object named by ``"package.module:attribute"`` (attribute may be dotted)."""
    module_name, sep, attribute = spec.strip().partition(":")
    if not sep or not module_name or not attribute:
        raise pytest.UsageError(f'{option} = "{spec}" is not "module:attribute"')
    found: object = importlib.import_module(module_name)
    for part in attribute.split("."):
        found = getattr(found, part)
    return found


def _configured(config: pytest.Config, option: str) -> object:
    spec = str(config.getini(option) or "")
    if not spec.strip():
        raise pytest.UsageError(f'{option} is not set in [tool.pytest.ini_options] (e.g. "my_pkg.project:PROJECT")')
    return load_object(spec, option=option)


@pytest.fixture(scope="session")
def project(pytestconfig: pytest.Config) -> ProjectInfo:
    """The project under test (its baked-in names and defaults), from ``mcp_auth_project``."""
    found = _configured(pytestconfig, PROJECT_OPTION)
    if not isinstance(found, ProjectInfo):
        raise pytest.UsageError(f"{PROJECT_OPTION} names a {type(found).__name__}, not a ProjectInfo")
    return found


@pytest.fixture(scope="session")
def create_app(pytestconfig: pytest.Config) -> AppFactory:
    """The project's app factory (``create_app(settings)``), from ``mcp_auth_app_factory``."""
    found = _configured(pytestconfig, APP_FACTORY_OPTION)
    if not callable(found):
        raise pytest.UsageError(f"{APP_FACTORY_OPTION} names a {type(found).__name__}, not a callable")
    return cast(AppFactory, found)


SCRUBBED_PREFIXES = ("MCP_", "CF_ACCESS_", "INFISICAL_")
SCRUBBED_NAMES = (
    "DATABASE_URL",
    "UPSTREAM_BASE_URL",
    "PROMETHEUS_MULTIPROC_DIR",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "FORWARDED_ALLOW_IPS",
)


def _scrub_environment(config: pytest.Config) -> None:
    """Remove the runtime variables of the developer's shell (a sourced .env, direnv) from this
    test process, before any fixture or test runs: settings a test does not set itself come from
    the defaults, never from outside. Subprocesses the tests start inherit the clean environment."""
    names = {name for name in os.environ if name.startswith(SCRUBBED_PREFIXES) or name in SCRUBBED_NAMES}
    spec = str(config.getini(PROJECT_OPTION) or "")
    if spec.strip():
        project = load_object(spec, option=PROJECT_OPTION)
        if isinstance(project, ProjectInfo):
            names.add(project.service_token_env)
    for name in names:
        os.environ.pop(name, None)


@pytest.fixture
def token_functions_state() -> Iterator[None]:
    """The package-level token functions (``mcp_auth.configure``, ``get_token``, ...) start
    unconfigured and are put back as they were after the test: their process-wide project
    and service never leak from one test into another."""
    with token_functions.isolated():
        yield


@pytest.fixture(scope="session")
def cloudflare_access() -> Iterator[FakeCloudflareAccess]:
    """A loopback Cloudflare Access team (JWKS endpoint + token minting)."""
    fake = FakeCloudflareAccess().start()
    yield fake
    fake.stop()


@pytest.fixture
def cf_access(cloudflare_access: FakeCloudflareAccess) -> Iterator[FakeCloudflareAccess]:
    """The session's fake, reset to serving after each test."""
    yield cloudflare_access
    cloudflare_access.down = False


@pytest.fixture(scope="session")
def authorization_server() -> Iterator[FakeAuthorizationServer]:
    """A loopback OAuth 2.1 authorization server (RFC 8414 metadata, JWKS, registration, PKCE)."""
    server = FakeAuthorizationServer().start()
    yield server
    server.stop()


@pytest.fixture
def idp(authorization_server: FakeAuthorizationServer) -> Iterator[FakeAuthorizationServer]:
    """The session's authorization server, put back to serving normally after each test."""
    authorization_server.requests.clear()
    yield authorization_server
    authorization_server.down, authorization_server.rfc8414 = False, True
    authorization_server.metadata_overrides.clear()
