"""Database API keys: create (shown once, hash stored), verify, revoke, expire, last-used throttle, scopes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from mcp_auth.db import Database
from mcp_auth.db.keys import PREFIX, TOUCH_INTERVAL, ApiKeyStore
from mcp_auth.db.models import api_keys
from mcp_auth.errors import AuthenticationFailed, ServiceUnavailable
from mcp_auth.identity import Identity
from mcp_auth.verifiers.api_key import ApiKeyVerifier
from sqlalchemy import Row, select, update


def row(database: Database, key_id: int) -> Row[Any]:
    with database.engine.connect() as conn:
        return conn.execute(select(api_keys).where(api_keys.c.id == key_id)).one()


async def test_create_shows_the_key_once_and_stores_its_hash(database: Database) -> None:
    created = await ApiKeyStore(database).create(" alice@example.com ")
    assert created.key.startswith(PREFIX) and len(created.key) == 48
    assert created.key not in repr(created) and created.email == "alice@example.com"
    stored = row(database, created.id)
    assert stored.key_hash == hashlib.sha256(created.key.encode()).hexdigest()
    assert stored.prefix == created.key[:12]
    for value in stored:
        assert created.key not in str(value)  # only the hash and a short prefix
    second = await ApiKeyStore(database).create("alice@example.com")
    assert second.key != created.key and second.id != created.id


async def test_verify_returns_the_owner(database: Database) -> None:
    created = await ApiKeyStore(database).create("alice@example.com")
    identity = await ApiKeyVerifier(database).verify(created.key)
    assert identity == Identity(subject="alice@example.com", method="api_key", email="alice@example.com")


async def test_other_credentials_are_not_ours(database: Database) -> None:
    assert await ApiKeyVerifier(database).verify("some-static-bearer-token-123456") is None


@pytest.mark.parametrize("key", [PREFIX + "A" * 43, PREFIX + "short", PREFIX])
async def test_unknown_or_malformed_keys_are_invalid(database: Database, key: str) -> None:
    with pytest.raises(AuthenticationFailed, match=r"^Invalid API key$"):
        await ApiKeyVerifier(database).verify(key)


async def test_revocation_is_effective_on_the_next_request(database: Database) -> None:
    keys = ApiKeyStore(database)
    created = await keys.create("alice@example.com")
    verifier = ApiKeyVerifier(database)
    assert await verifier.verify(created.key) is not None
    assert await keys.revoke(created.id) is True
    with pytest.raises(AuthenticationFailed, match=r"^API key revoked$"):
        await verifier.verify(created.key)
    first_revoked = row(database, created.id).revoked_at
    assert await keys.revoke(created.id) is True  # idempotent, keeps the first time
    assert row(database, created.id).revoked_at == first_revoked
    assert await keys.revoke(9999) is False


async def test_expired_keys_are_refused(database: Database) -> None:
    keys = ApiKeyStore(database)
    expired = await keys.create("bob@example.com", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    valid = await keys.create("bob@example.com", expires_at=datetime.now(UTC) + timedelta(days=1))
    verifier = ApiKeyVerifier(database)
    with pytest.raises(AuthenticationFailed, match=r"^API key expired$"):
        await verifier.verify(expired.key)
    assert (await verifier.verify(valid.key)) is not None


async def test_last_used_is_written_at_most_once_a_minute(database: Database) -> None:
    created = await ApiKeyStore(database).create("alice@example.com")
    assert row(database, created.id).last_used_at is None
    verifier = ApiKeyVerifier(database)
    await verifier.verify(created.key)
    first = row(database, created.id).last_used_at
    assert first is not None
    await verifier.verify(created.key)
    assert row(database, created.id).last_used_at == first  # throttled
    old = datetime.now(UTC) - TOUCH_INTERVAL - timedelta(seconds=5)
    with database.engine.begin() as conn:
        conn.execute(update(api_keys).values(last_used_at=old))
    await verifier.verify(created.key)
    assert row(database, created.id).last_used_at != old


async def test_list_shows_no_keys(database: Database) -> None:
    keys = ApiKeyStore(database)
    created = await keys.create("alice@example.com")
    await keys.revoke(created.id)
    (info,) = await keys.list()
    assert (info.id, info.email, info.prefix) == (created.id, "alice@example.com", created.key[:12])
    assert info.revoked_at is not None and info.revoked_at.tzinfo is not None
    assert created.key not in repr(info)


@pytest.mark.parametrize("email", ["", "no-at-sign", "a@", "@b", "a b@c"])
async def test_create_needs_an_email(sqlite_database: Database, email: str) -> None:
    with pytest.raises(ValueError, match="email"):
        await ApiKeyStore(sqlite_database).create(email)


async def test_scopes_are_stored_listed_and_carried_by_the_identity(database: Database) -> None:
    keys = ApiKeyStore(database)
    scoped = await keys.create("bot@example.com", scopes=["write", "read", "read"])
    assert scoped.scopes == {"read", "write"}
    assert row(database, scoped.id).scopes == "read write"  # sorted, space-separated
    everything = await keys.create("alice@example.com")
    assert everything.scopes == frozenset() and row(database, everything.id).scopes is None
    assert [info.scopes for info in await keys.list()] == [{"read", "write"}, frozenset()]
    identity = await ApiKeyVerifier(database).verify(scoped.key)
    assert identity is not None and identity.scopes == {"read", "write"} and identity.restricted
    unrestricted = await ApiKeyVerifier(database).verify(everything.key)
    assert unrestricted is not None and not unrestricted.restricted


async def test_an_empty_stored_scope_list_is_unrestricted(sqlite_database: Database) -> None:
    created = await ApiKeyStore(sqlite_database).create("alice@example.com")
    with sqlite_database.engine.begin() as conn:
        conn.execute(update(api_keys).values(scopes=""))
    identity = await ApiKeyVerifier(sqlite_database).verify(created.key)
    assert identity is not None and identity.scopes == frozenset()


# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
VALID_SCOPES = ["!", "#", "[", "]", "~", "tools:read", "https://api.example.com/tools.read", "a" * 300]


@pytest.mark.parametrize(
    "scope", ["", " ", "a b", "tab\tbed", 'say"hi"', "back\\slash", "caf\u00e9", "nul\x00", "\x7f"]
)
async def test_a_scope_outside_rfc_6749_is_refused(sqlite_database: Database, scope: str) -> None:
    keys = ApiKeyStore(sqlite_database)
    with pytest.raises(ValueError, match=r"^invalid scope .*: a scope is one or more printable ASCII characters"):
        await keys.create("bot@example.com", scopes=["read", scope])
    assert await keys.list() == []  # nothing created


async def test_every_rfc_6749_scope_character_is_accepted(sqlite_database: Database) -> None:
    created = await ApiKeyStore(sqlite_database).create("bot@example.com", scopes=VALID_SCOPES)
    assert created.scopes == set(VALID_SCOPES)
    (info,) = await ApiKeyStore(sqlite_database).list()
    assert info.scopes == set(VALID_SCOPES)


async def test_scopes_must_be_a_collection_not_a_string(sqlite_database: Database) -> None:
    with pytest.raises(TypeError, match="not a string"):
        await ApiKeyStore(sqlite_database).create("bot@example.com", scopes="read")


async def test_database_down_is_503_not_401() -> None:
    database = Database.from_url("postgresql://u:pw-xyz@127.0.0.1:1/db")
    try:
        with pytest.raises(ServiceUnavailable, match=r"^PostgreSQL connection failed$"):
            await ApiKeyVerifier(database).verify(PREFIX + "A" * 43)
    finally:
        database.close()
