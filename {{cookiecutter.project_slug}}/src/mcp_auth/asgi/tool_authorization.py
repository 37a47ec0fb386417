"""ASGI step 2: for a ``tools/call`` the MCP transport will dispatch, FastMCP's verdict on the
tool's scopes before it dispatches, so a caller lacking one gets a real HTTP 403
``insufficient_scope`` (RFC 6750) that OAuth clients answer by asking for the scope.

Runs after authentication (``scope["user"]`` holds the caller's access token). A call that
passes leaves its tool's policy in the scope for the token-resolution step; requests the
transport will refuse (a batch, a body with a byte-order mark, a notification, an unknown tool)
pass through untouched, so they are never authorized, resolved or audited.
"""

from __future__ import annotations

from mcp_auth.asgi.request_body import dispatchable_tool_call, read_body, replay
from mcp_auth.asgi.responses import send_insufficient_scope, send_too_large
from mcp_auth.discovery import ProtectedResource
from mcp_auth.observability.metrics import ToolNames
from mcp_auth.tool_policies import ToolPolicies, ToolPolicy, authorize
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

TOOL_POLICY = "mcp_auth.tool_policy"
"""ASGI scope key: the policy of the authorized tool this request calls."""


def called_tool(scope: Scope) -> ToolPolicy | None:
    """The authorized, dispatchable tool this request calls (set by this step), else None."""
    policy = scope.get(TOOL_POLICY)
    return policy if isinstance(policy, ToolPolicy) else None


class ToolAuthorizationMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        policies: ToolPolicies,
        public_paths: frozenset[str],
        resource: ProtectedResource | None = None,
        tool_names: ToolNames | None = None,
    ) -> None:
        self.app = app
        self.policies = policies
        self.public_paths = public_paths
        self.resource = resource
        self.tool_names = tool_names or ToolNames()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] in self.public_paths:
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:
            await send_too_large(send)
            return
        receive = replay(body, receive)
        name = dispatchable_tool_call(Headers(scope=scope), body)
        policy = self.policies.get(name) if name is not None else None
        if policy is not None:
            decision = await authorize(policy, scope["user"].access_token)
            if decision.missing_scopes:
                self.tool_names.record(policy.name, "forbidden")
                metadata = self.resource.metadata_url if self.resource else None
                await send_insufficient_scope(send, decision.missing_scopes, resource_metadata=metadata)
                return
            if decision.allowed:  # an opaque check's denial is FastMCP's to answer, at dispatch
                scope[TOOL_POLICY] = policy
        await self.app(scope, receive, send)
