"""Settings for tests, built from an explicit environment (never the developer's shell)."""

from __future__ import annotations

from mcp_auth.config import McpAuthSettings, ProjectInfo, load_settings

DEMO = ProjectInfo(slug="demo-mcp", service_name="demo", service_token_env="DEMO_API_TOKEN")
DEMO_BEARER = "demo-bearer-token-0123456789abcdef"


def make_settings(project: ProjectInfo = DEMO, /, **env: str) -> McpAuthSettings:
    """``make_settings(MCP_AUTH_MODE="bearer", MCP_BEARER_TOKENS="ci=...")``; another project
    goes first (positional only, so ``**env`` of a ``dict[str, str]`` type-checks)."""
    return load_settings(project, environ=env)
