"""Phase 1: the upstream token comes from one environment variable, read once at start-up."""

from __future__ import annotations

from mcp_auth.errors import ReadOnlyStore, ServiceUnavailable
from mcp_auth.stores.base import DEFAULT_KEY


class EnvTokenStore:
    """Holds the single shared token of ``service`` (key ``default``); no per-caller tokens."""

    name = "env"

    def __init__(self, service: str, variable: str, value: str | None) -> None:
        self._service = service
        self._variable = variable
        self._value = value or None

    async def get(self, service: str, key: str) -> str | None:
        if service != self._service or key != DEFAULT_KEY:
            return None
        if self._value is None:
            raise ServiceUnavailable(f"{self._variable} is not set")
        return self._value

    async def set(self, service: str, key: str, value: str) -> None:
        raise ReadOnlyStore(
            f"the env store is read-only: set {self._variable} in the environment, "
            "or switch MCP_TOKEN_STORE to postgres"
        )

    async def delete(self, service: str, key: str) -> bool:
        await self.set(service, key, "")
        return False

    async def check(self) -> None:
        await self.get(self._service, DEFAULT_KEY)

    async def close(self) -> None:
        return None
