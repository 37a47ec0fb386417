"""mcp_auth: authentication, encrypted token storage and audit for MCP servers.

Template-owned: identical in every generated project and updated with ``cruft update``.
Public surface: ``current()`` for tools; ``set_token`` / ``get_token`` / ``delete_token`` /
``rotate_key`` on the store configured from the environment (spec names); ``build_http_app``.
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

if TYPE_CHECKING:
    from mcp_auth.api import configure, delete_token, get_token, rotate_key, set_token

__all__ = [
    "AuthenticationFailed",
    "CallContext",
    "ConfigError",
    "DecryptionError",
    "Identity",
    "McpAuthError",
    "McpAuthSettings",
    "ProjectInfo",
    "ReadOnlyStore",
    "ServiceUnavailable",
    "TokenNotFound",
    "configure",
    "current",
    "delete_token",
    "get_token",
    "load_settings",
    "rotate_key",
    "set_token",
]

_API = {"set_token", "get_token", "delete_token", "rotate_key", "configure"}


def __getattr__(name: str) -> Any:
    # The storage API pulls in SQLAlchemy; import it only when used.
    if name in _API:
        from mcp_auth import api

        return getattr(api, name)
    raise AttributeError(f"module 'mcp_auth' has no attribute {name!r}")
