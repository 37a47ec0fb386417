"""pytest plugin (enabled with ``-p mcp_auth.testing.plugin``): fixtures for mcp_auth's tests
and for the project's own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mcp_auth.testing.cloudflare import FakeCloudflareAccess
from mcp_auth.testing.database import *  # noqa: F403  (database_url, sqlite_url)


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
