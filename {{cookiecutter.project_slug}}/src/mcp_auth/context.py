"""The one accessor tools use: who is calling, and the upstream token resolved for this call."""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass, field

import httpx
from mcp_auth.identity import Identity


@dataclass(frozen=True, slots=True)
class CallContext:
    identity: Identity
    service: str
    token_key: str | None = None
    _token: str | None = field(default=None, repr=False)
    _http: httpx.AsyncClient | None = field(default=None, repr=False)

    @property
    def http(self) -> httpx.AsyncClient:
        """The server's pooled HTTP client for upstream calls (opened with the app, shared by all
        calls: never close it). Pass the service token per request, never as a client default."""
        if self._http is None:
            raise _tool_error("no upstream HTTP client: the server opens one when it starts")
        return self._http

    @property
    def service_token(self) -> str:
        """The upstream token for this call; a clear tool error when none is stored."""
        if self._token is None:
            raise _tool_error(
                f"no upstream token resolved for service {self.service!r}: only calls of a tool tagged "
                "mcp_auth.NEEDS_UPSTREAM_TOKEN get one (mcp.tool(fn, tags={mcp_auth.NEEDS_UPSTREAM_TOKEN}))"
            )
        return self._token


_current: ContextVar[CallContext | None] = ContextVar("mcp_auth_call", default=None)


def current() -> CallContext:
    """The authenticated call being served (set by the middleware for every request)."""
    call = _current.get()
    if call is None:
        raise _tool_error("no authenticated request in context")
    return call


def current_identity() -> Identity | None:
    """The authenticated caller of the request being served; None outside a request."""
    call = _current.get()
    return None if call is None else call.identity


def bind(call: CallContext) -> Token[CallContext | None]:
    """Set the call for the current task; returns the token to pass to ``unbind``."""
    return _current.set(call)


def unbind(token: Token[CallContext | None]) -> None:
    _current.reset(token)


def _tool_error(message: str) -> Exception:
    # Imported here: fastmcp is slow to import and operator CLI commands never need it.
    from fastmcp.exceptions import ToolError

    return ToolError(message)
