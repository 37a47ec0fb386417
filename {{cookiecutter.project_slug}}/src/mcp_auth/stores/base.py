"""The one interface every token store implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class TokenStore(Protocol):
    """Where upstream service tokens live.

    Contract shared by every store:
    - ``get`` returns the plaintext or ``None`` when nothing is stored under (service, key);
      it raises ``ServiceUnavailable`` (message names the cause) when the backend cannot answer.
    - ``set`` / ``delete`` raise ``ReadOnlyStore`` on stores that are managed elsewhere.
    - ``check`` is the readiness probe behind ``/status``: returns normally when the store
      can hand out the default token, else raises ``ServiceUnavailable``.
    - Stores never log or put a token value into an exception.
    """

    name: str

    async def get(self, service: str, key: str) -> str | None: ...

    async def set(self, service: str, key: str, value: str) -> None: ...

    async def delete(self, service: str, key: str) -> bool: ...

    async def check(self) -> None: ...

    async def close(self) -> None: ...


DEFAULT_KEY = "default"
"""The key of the shared token (what ``tokens import-env`` writes)."""
