"""The spec's token API as package-level functions: ``await mcp_auth.get_token(service, key)``.

They act on one TokenService for the process:
- in a running server, the server's own (``use`` installs it for the app's lifetime);
- elsewhere (scripts), one opened from the environment (MCP_TOKEN_STORE, DATABASE_URL,
  MCP_AUTH_ENCRYPTION_KEY, ...) on first use, for the project named with ``configure(PROJECT)``
  (the project's CLI does this), auditing as MCP_OPERATOR_EMAIL;
- or one built from an explicitly given store: ``configure(store=...)``.
Code that prefers no globals builds a ``TokenService`` and calls the same methods on it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from mcp_auth.audit import AuditSink, LogAuditSink
from mcp_auth.backend import Backend, open_backend
from mcp_auth.config import ProjectInfo, load_settings
from mcp_auth.stores.base import AuditedReads, TokenStore
from mcp_auth.tokens import TokenService

__all__ = [
    "close",
    "configure",
    "delete_token",
    "get_token",
    "import_tokens",
    "isolated",
    "rotate_key",
    "set_token",
    "use",
]

GENERIC_PROJECT = ProjectInfo(slug="mcp-server", service_name="service", service_token_env="SERVICE_API_TOKEN")

_lock = threading.Lock()
_project: ProjectInfo | None = None
_service: TokenService | None = None
_owned: Backend | None = None  # opened here from the environment: close() closes it


def configure(
    project: ProjectInfo | None = None,
    *,
    store: TokenStore | None = None,
    audit: AuditSink | None = None,
    actor: str | None = None,
) -> None:
    """Name the project (settings are then read from the environment on first use), or hand
    over an explicitly built store. Replaces any service used before (without closing it)."""
    global _project, _service, _owned
    with _lock:
        if project is not None:
            _project = project
        if _owned is not None and _owned.database is not None:
            # Opened here from the environment: release its connection pool (synchronous). An
            # Infisical store's HTTP client holds no connection between reads.
            _owned.database.close()
        _owned = None
        if store is None:
            _service = None
            return
        settings = load_settings(_project or GENERIC_PROJECT)
        sink = audit or _default_sink(store)
        _service = TokenService(store, sink, service=settings.service_name, operator=actor or settings.operator)


def _default_sink(store: TokenStore) -> AuditSink:
    # A store that audits its own reads says where; the package API's reads are audited there too.
    return store.audit_sink() if isinstance(store, AuditedReads) else LogAuditSink()


def use(service: TokenService) -> Callable[[], None]:
    """Make ``service`` the one the package-level functions use; returns the undo (the server
    calls both from its lifespan, so tools and the middleware share one store and audit log)."""
    global _service
    with _lock:
        previous, _service = _service, service

    def restore() -> None:
        global _service
        with _lock:
            if _service is service:
                _service = previous

    return restore


def _current() -> TokenService:
    global _service, _owned
    with _lock:
        if _service is None:
            _owned = open_backend(load_settings(_project or GENERIC_PROJECT))
            _service = _owned.tokens
        return _service


async def set_token(service: str, key: str, value: str) -> None:
    """Store (encrypt) a token; ReadOnlyStore on the env and Infisical stores."""
    await _current().set(service, key, value)


async def get_token(service: str, key: str) -> str | None:
    """The plaintext token or None; every call leaves a ``get_token`` audit entry."""
    return await _current().get(service, key)


async def delete_token(service: str, key: str) -> bool:
    """True when a token was deleted, False when none was stored."""
    return await _current().delete(service, key)


async def import_tokens(rows: Iterable[tuple[str, str, str]]) -> int:
    """Store many (service, key, value) tokens in one transaction, all or nothing (one
    ``set_token`` audit row each); returns how many. A ValueError names the first bad row (a
    name ``set`` refuses, an empty value, a (service, key) twice); ReadOnlyStore on the env and
    Infisical stores."""
    return await _current().import_many(rows)


async def rotate_key(old_key: str, new_key: str) -> int:
    """Re-encrypt every token from ``old_key`` to ``new_key`` (base64 keys); all or nothing.

    Returns the number of tokens re-encrypted. Only the database store holds encrypted tokens.
    """
    return await _current().rotate_key(old_key, new_key)


async def close() -> None:
    """Close what was opened from the environment (tests, scripts that exit cleanly)."""
    global _service, _owned
    with _lock:
        owned, _owned = _owned, None
        if owned is not None and _service is owned.tokens:
            _service = None
    if owned is not None:
        await owned.close()


@contextmanager
def isolated() -> Iterator[None]:
    """Run with the package-level functions unconfigured, then put back what was there (tests:
    the process-wide project and service never leak from one test into another)."""
    global _project, _service, _owned
    with _lock:
        saved = _project, _service, _owned
        _project = _service = _owned = None
    try:
        yield
    finally:
        with _lock:
            _project, _service, _owned = saved
