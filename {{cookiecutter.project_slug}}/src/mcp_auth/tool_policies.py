"""What each tool asks of its caller: the scopes its FastMCP ``auth`` checks require, and whether
it needs the upstream token.

Tools declare both with FastMCP's own API, so nothing here is a second registry to keep in step:
``mcp.tool(fn, auth=require_scopes("upstream:read"), tags={NEEDS_UPSTREAM_TOKEN})``. The index is
built once, when the server starts, and lets the HTTP layer refuse (403) or resolve the token
(503 when it cannot) before FastMCP dispatches: those answers must be real HTTP statuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from fastmcp import FastMCP
from fastmcp.exceptions import AuthorizationError
from fastmcp.server.auth import AccessToken
from fastmcp.server.context import reset_transport, set_transport
from fastmcp.tools import Tool
from fastmcp.utilities.authorization import AuthContext, run_auth_checks_with_shortfall, scope_requirements

NEEDS_UPSTREAM_TOKEN = "upstream-token"
"""Tag of a tool that reads ``mcp_auth.current().service_token``: only its calls resolve (and
audit) the upstream token."""


@dataclass(frozen=True, slots=True)
class ToolPolicy:
    tool: Tool
    scopes: frozenset[str]
    """The scopes the tool's ``require_scopes``-style checks ask for (empty: none, or only
    opaque checks, which FastMCP evaluates itself)."""
    needs_token: bool

    @property
    def name(self) -> str:
        return self.tool.name


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    missing_scopes: tuple[str, ...] = ()
    """Non-empty only for a scope shortfall (answered 403 insufficient_scope); a denial by an
    opaque check is left to FastMCP, which answers it without revealing anything."""


class ToolPolicies:
    """The tools of one FastMCP server by name; empty until ``load`` ran (server start)."""

    def __init__(self, policies: Iterable[ToolPolicy] = ()) -> None:
        self._policies: Mapping[str, ToolPolicy] = {}
        self.scopes_supported: tuple[str, ...] = ()
        self._replace(policies)

    def _replace(self, policies: Iterable[ToolPolicy]) -> None:
        self._policies = {policy.name: policy for policy in policies}
        self.scopes_supported = _union(policy.scopes for policy in self._policies.values())

    async def load(self, mcp: FastMCP) -> None:
        # FastMCP filters listed tools by the *current* caller's access; listing as its trusted
        # local transport is how the server itself sees every enabled tool.
        token = set_transport("stdio")
        try:
            tools = await mcp.list_tools(run_middleware=False)
        finally:
            reset_transport(token)
        self._replace(policy_of(tool) for tool in tools)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._policies)

    def get(self, name: str) -> ToolPolicy | None:
        return self._policies.get(name)


def policy_of(tool: Tool) -> ToolPolicy:
    required: set[str] = set()
    checks = tool.auth if isinstance(tool.auth, list) else [] if tool.auth is None else [tool.auth]
    nobody = AccessToken(token="", client_id="", scopes=[])
    for check in checks:
        # Check by check: FastMCP withholds the scopes of a whole list that holds an opaque check,
        # and an unrestricted credential must still hold this tool's scopes.
        required.update(scope_requirements(check, AuthContext(token=nobody, component=tool)) or ())
    return ToolPolicy(tool=tool, scopes=frozenset(required), needs_token=NEEDS_UPSTREAM_TOKEN in tool.tags)


async def authorize(policy: ToolPolicy, token: AccessToken) -> Decision:
    """FastMCP's own verdict on the tool's ``auth`` checks, taken before dispatch."""
    if policy.tool.auth is None:
        return Decision(allowed=True)
    try:
        allowed, missing = await run_auth_checks_with_shortfall(
            policy.tool.auth, AuthContext(token=token, component=policy.tool)
        )
    except AuthorizationError:  # a check's deliberate denial: FastMCP answers it at dispatch
        return Decision(allowed=False)
    return Decision(allowed=allowed, missing_scopes=tuple(missing))


def _union(groups: Iterable[frozenset[str]]) -> tuple[str, ...]:
    result: set[str] = set()
    for group in groups:
        result |= group
    return tuple(sorted(result))
