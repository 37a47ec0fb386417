"""API keys: long random bearer tokens for machine callers, stored only as SHA-256 hashes.

A key is ``mcpk_`` + base64url of 32 random bytes, shown once at creation. 256 bits of entropy
make a plain (unsalted, fast) hash safe to store and to index for lookup. Every request reads the
row, so revocation and expiry take effect on the next request; ``last_used_at`` is written at
most once per minute per key so busy keys do not turn every request into a write.

A key may carry scopes (RFC 6749 scope tokens, stored space-separated); a key without any is
unrestricted: it may call every tool.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mcp_auth.db.engine import REQUEST_DEADLINE_SECONDS, Database, as_utc
from mcp_auth.db.models import api_keys
from mcp_auth.errors import AuthenticationFailed
from mcp_auth.scopes import is_scope
from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection

PREFIX = "mcpk_"
_KEY_LENGTH = len(PREFIX) + 43  # 32 bytes of base64url without padding
_SHOWN_PREFIX = 12  # "mcpk_" + 7 characters: enough to tell keys apart in a list
TOUCH_INTERVAL = timedelta(minutes=1)


def new_key() -> str:
    return PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def valid_email(email: str) -> bool:
    local, at, domain = email.partition("@")
    return bool(at and local and domain) and len(email) <= 320 and not any(c.isspace() for c in email)


def validate_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes as a set; ValueError naming the first one that is not an RFC 6749 scope token
    (each value is one scope: "a b" is refused, not split)."""
    if isinstance(scopes, str):  # would silently become one scope per character
        raise TypeError("scopes must be an iterable of scope strings, not a string")
    scopes = list(scopes)
    for scope in scopes:
        if not is_scope(scope):
            raise ValueError(
                f"invalid scope {scope!r}: a scope is one or more printable ASCII characters "
                "without spaces, double quotes or backslashes"
            )
    return frozenset(scopes)


def _stored_scopes(scopes: frozenset[str]) -> str | None:
    return " ".join(sorted(scopes)) or None


def _parse_scopes(stored: str | None) -> frozenset[str]:
    return frozenset(stored.split()) if stored else frozenset()


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What ``keys list`` shows: never the key or its hash."""

    id: int
    prefix: str
    email: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    scopes: frozenset[str]  # empty: unrestricted

    @classmethod
    def from_row(cls, row: Any) -> ApiKeyInfo:
        return cls(
            id=row.id,
            prefix=row.prefix,
            email=row.email,
            created_at=as_utc(row.created_at),
            last_used_at=_utc(row.last_used_at),
            expires_at=_utc(row.expires_at),
            revoked_at=_utc(row.revoked_at),
            scopes=_parse_scopes(row.scopes),
        )


@dataclass(frozen=True, slots=True)
class NewApiKey:
    id: int
    key: str = field(repr=False)
    email: str
    expires_at: datetime | None
    scopes: frozenset[str] = frozenset()


_INFO_COLUMNS = [api_keys.c[name] for name in ApiKeyInfo.__dataclass_fields__]


class ApiKeyStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def create(self, email: str, *, expires_at: datetime | None = None, scopes: Iterable[str] = ()) -> NewApiKey:
        """A new key for ``email``; ``scopes`` empty: unrestricted. ValueError on a bad email or scope."""
        email = email.strip()
        if not valid_email(email):
            raise ValueError("expected an email address")
        granted = validate_scopes(scopes)
        key = new_key()

        def work(conn: Connection) -> int:
            result = conn.execute(
                api_keys.insert()
                .values(
                    key_hash=hash_key(key),
                    prefix=key[:_SHOWN_PREFIX],
                    email=email,
                    created_at=datetime.now(UTC),
                    expires_at=expires_at,
                    scopes=_stored_scopes(granted),
                )
                .returning(api_keys.c.id)
            )
            return int(result.scalar_one())

        key_id = await self.database.run(work, autocommit=True)
        return NewApiKey(id=key_id, key=key, email=email, expires_at=expires_at, scopes=granted)

    async def list(self) -> list[ApiKeyInfo]:
        def work(conn: Connection) -> list[ApiKeyInfo]:
            rows = conn.execute(select(*_INFO_COLUMNS).order_by(api_keys.c.id))
            return [ApiKeyInfo.from_row(row) for row in rows]

        return await self.database.run(work, autocommit=True, retry=True)

    async def revoke(self, key_id: int) -> bool:
        """Revoke a key (idempotent); False when there is no key with that id."""

        def work(conn: Connection) -> bool:
            table = api_keys
            conn.execute(
                update(table)
                .where(table.c.id == key_id, table.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            return conn.execute(select(table.c.id).where(table.c.id == key_id)).first() is not None

        return await self.database.run(work)

    async def authenticate(self, key: str) -> ApiKeyInfo:
        """The key's row, or AuthenticationFailed (invalid, revoked, expired)."""
        if not key.startswith(PREFIX) or len(key) != _KEY_LENGTH:
            raise AuthenticationFailed("Invalid API key")
        digest = hash_key(key)

        def work(conn: Connection) -> ApiKeyInfo | None:
            row = conn.execute(select(*_INFO_COLUMNS).where(api_keys.c.key_hash == digest)).first()
            if row is None:
                return None
            info = ApiKeyInfo.from_row(row)
            now = datetime.now(UTC)
            usable = info.revoked_at is None and (info.expires_at is None or info.expires_at > now)
            cutoff = now - TOUCH_INTERVAL
            if usable and (info.last_used_at is None or info.last_used_at < cutoff):
                # Conditional, so replicas racing on the same key write it once.
                conn.execute(
                    update(api_keys)
                    .where(
                        api_keys.c.id == info.id,
                        or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < cutoff),
                    )
                    .values(last_used_at=now)
                )
            return info

        # Safe to retry: a read plus an idempotent "touch".
        info = await self.database.run(work, autocommit=True, retry=True, deadline=REQUEST_DEADLINE_SECONDS)
        if info is None:
            raise AuthenticationFailed("Invalid API key")
        if info.revoked_at is not None:
            raise AuthenticationFailed("API key revoked")
        if info.expires_at is not None and info.expires_at <= datetime.now(UTC):
            raise AuthenticationFailed("API key expired")
        return info
