"""The interface every token store implements, and the optional capabilities some add."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

from mcp_auth.audit import AuditSink


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


@runtime_checkable
class AuditedReads(Protocol):
    """A store that writes the ``get_token`` audit row itself, in the same round trip as the read
    (the database store: one connection checkout per hand-out instead of two)."""

    def audit_sink(self) -> AuditSink:
        """A sink writing to the same audit log as the store's own rows."""
        ...

    def writes_audit_to(self, sink: AuditSink) -> bool:
        """True when its own audit rows land where ``sink`` writes (then the fused read is used)."""
        ...

    async def get_audited(
        self,
        service: str,
        key: str,
        user_email: str | None = None,
        *,
        audit_missing: bool = True,
        tool: str | None = None,
    ) -> str | None:
        """The value or None, with its ``get_token`` row ("not found" unless ``audit_missing=False``)."""
        ...

    async def get_first_audited(
        self, service: str, keys: Sequence[str], user_email: str | None = None, *, tool: str | None = None
    ) -> tuple[str, str] | None:
        """(key, value) of the first of ``keys`` stored, in the same single trip: the success row
        names the key used. None when none is stored, after ONE failure row naming the last key
        (detail: TokenNotFound's message). The found row failing to decrypt raises DecryptionError
        (after its failure row) without trying the later keys."""
        ...


@runtime_checkable
class RotatableStore(Protocol):
    """A store holding encrypted tokens that can be re-encrypted under a new key."""

    async def rotate_key(self, old_key: str, new_key: str) -> int: ...


DEFAULT_KEY = "default"
"""The key of the shared token (what ``tokens import-env`` writes)."""


@runtime_checkable
class BulkWritableStore(Protocol):
    """A store that writes many tokens in one transaction (``tokens import``)."""

    async def import_many(self, rows: Iterable[tuple[str, str, str]]) -> int:
        """Store every (service, key, value), all or nothing, one ``set_token`` audit row each;
        returns how many. A ValueError names the first row refused (nothing is written then)."""
        ...
