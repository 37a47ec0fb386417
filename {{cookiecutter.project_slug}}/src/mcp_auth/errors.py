"""Every failure mcp_auth can raise, each mapped to exactly one user-visible outcome.

ConfigError -> refuse to start (exit 1, one line); AuthenticationFailed -> 401;
ServiceUnavailable -> 503; TokenNotFound / DecryptionError -> clear error, never a traceback.
Messages are shown to users and written to logs, so they never contain a secret.
"""

from __future__ import annotations


class McpAuthError(Exception):
    """Base class: the message is safe to show (no secrets, no DSNs)."""

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(McpAuthError):
    """Configuration that cannot work; the message names the variable and how to fix it."""


class AuthenticationFailed(McpAuthError):
    """The caller could not be authenticated (HTTP 401).

    ``message`` is what the caller sees; ``reason`` is the finer cause for the server log
    (e.g. "Signature has expired"), never a credential.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class ServiceUnavailable(McpAuthError):
    """A dependency (token store, JWKS endpoint, database) cannot answer (HTTP 503).

    The message names the cause, e.g. ``PostgreSQL connection failed`` or
    ``CODA_API_TOKEN is not set``; it is public (``/status`` answers anonymous callers), so it
    never holds a host, URL, project id or secret path. ``detail`` adds those for the server log.
    """

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail

    @property
    def log_detail(self) -> str:
        """What the server log records: the message, plus the detail when there is one."""
        return self.message if self.detail is None else f"{self.message}: {self.detail}"


class TokenNotFound(McpAuthError):
    """No token is stored under (service, key)."""

    def __init__(self, service: str, key: str) -> None:
        super().__init__(f"no token stored for service {service!r}, key {key!r}")
        self.service = service
        self.key = key


class ReadOnlyStore(McpAuthError):
    """The configured store cannot be written through mcp_auth (env, Infisical)."""


class DecryptionError(McpAuthError):
    """A stored ciphertext cannot be decrypted (wrong key, tampered row)."""
