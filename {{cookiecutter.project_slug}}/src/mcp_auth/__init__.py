"""mcp_auth: authentication, encrypted token storage and audit for MCP servers.

Template-owned: identical in every generated project and updated with ``cruft update``.
This module is the public surface (``__all__``); the layout behind it is described in the
template's docs/architecture.md.
- Tools: ``current()`` (the caller and the upstream token of this call); a tool that needs the
  upstream token is tagged ``NEEDS_UPSTREAM_TOKEN``.
- The spec's token API on the store configured from the environment: ``set_token``,
  ``get_token``, ``delete_token``, ``rotate_key`` (and ``import_tokens``, many in one
  transaction); ``configure(PROJECT)`` names the project.
- Building a server: ``load_settings``, ``Runtime``, ``build_http_app``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcp_auth.config import McpAuthSettings, ProjectInfo, load_settings
from mcp_auth.context import CallContext, current
from mcp_auth.errors import (
    AuthenticationFailed,
    ConfigError,
    DecryptionError,
    McpAuthError,
    ReadOnlyStore,
    ServiceUnavailable,
    TokenNotFound,
)
from mcp_auth.identity import Identity
from mcp_auth.runtime import Runtime
from mcp_auth.token_functions import (
    close,
    configure,
    delete_token,
    get_token,
    import_tokens,
    rotate_key,
    set_token,
)
from mcp_auth.tokens import TokenService

if TYPE_CHECKING:  # resolved lazily below: FastMCP is slow to import and CLI commands never need it
    from mcp_auth.asgi.app import build_http_app
    from mcp_auth.tool_policies import NEEDS_UPSTREAM_TOKEN

__all__ = [
    "NEEDS_UPSTREAM_TOKEN",
    "AuthenticationFailed",
    "CallContext",
    "ConfigError",
    "DecryptionError",
    "Identity",
    "McpAuthError",
    "McpAuthSettings",
    "ProjectInfo",
    "ReadOnlyStore",
    "Runtime",
    "ServiceUnavailable",
    "TokenNotFound",
    "TokenService",
    "build_http_app",
    "close",
    "configure",
    "current",
    "delete_token",
    "get_token",
    "import_tokens",
    "load_settings",
    "rotate_key",
    "set_token",
]


def __getattr__(name: str) -> Any:
    if name == "build_http_app":
        from mcp_auth.asgi.app import build_http_app

        return build_http_app
    if name == "NEEDS_UPSTREAM_TOKEN":
        from mcp_auth.tool_policies import NEEDS_UPSTREAM_TOKEN

        return NEEDS_UPSTREAM_TOKEN
    raise AttributeError(f"module 'mcp_auth' has no attribute {name!r}")
