"""Phase 2: tokens encrypted with AES-256-GCM in PostgreSQL (SQLite for local development).

Every write commits together with its audit row. Key rotation re-encrypts every row in one
transaction (all or nothing; the bulk work is in ``db/reencryption.py``). Writers and
rotations exclude each other (PostgreSQL advisory lock, shared for writers; SQLite serializes
writers anyway), and a writer refuses a current key that a rotation retired, so no replica can
write a row under a key the rotated fleet no longer has.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio.to_thread
from mcp_auth.audit import Action, AuditEvent, AuditSink, Result
from mcp_auth.config import McpAuthSettings
from mcp_auth.crypto import Envelope, Keyring, parse_key
from mcp_auth.db import Database, as_utc, open_database
from mcp_auth.db.audit_log import DatabaseAuditSink, append
from mcp_auth.db.audited_reads import AuditedRead, ReadBatches, Undecryptable
from mcp_auth.db.bulk_write import IMPORT_DETAIL, import_rows
from mcp_auth.db.engine import REQUEST_DEADLINE_SECONDS
from mcp_auth.db.models import retired_encryption_keys as retired
from mcp_auth.db.models import tokens
from mcp_auth.db.reencryption import Progress, reencrypt_all
from mcp_auth.errors import ConfigError, DecryptionError, McpAuthError, ServiceUnavailable, TokenNotFound
from mcp_auth.observability import tracing
from mcp_auth.observability.metrics import observe
from mcp_auth.stores.base import DEFAULT_KEY
from mcp_auth.token_import import check_rows
from sqlalchemy import Table, bindparam, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

T = TypeVar("T")

# pg_advisory_xact_lock key: writers take it shared, rotations exclusive ("mcp_tokn").
TOKENS_LOCK = 0x6D63705F746F6B6E
ROTATION_SERVICE = "*"
"""``service_id`` of a rotation's audit row: a rotation covers every service."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """What ``tokens list`` shows: never the value."""

    service: str
    key: str
    key_id: str
    created_at: datetime
    updated_at: datetime


def _insert(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT (both spell ON CONFLICT the same way)."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


# Built once: on the hot path, constructing the statement per call costs more than the query.
_SELECT_TOKEN = select(tokens.c.key_id, tokens.c.nonce, tokens.c.ciphertext).where(
    tokens.c.service_id == bindparam("service"), tokens.c.key == bindparam("key")
)


def _select_token(conn: Connection, service: str, key: str) -> Envelope | None:
    row = conn.execute(_SELECT_TOKEN, {"service": service, "key": key}).first()
    return None if row is None else Envelope(row.key_id, bytes(row.nonce), bytes(row.ciphertext))


class DatabaseTokenStore:
    """TokenStore over the ``tokens`` table; ``actor`` is who audit rows of writes name."""

    name = "postgres"

    def __init__(
        self,
        database: Database,
        keyring: Keyring,
        *,
        actor: str,
        service_name: str | None = None,
        owns_database: bool = False,
        audit_key: bytes | None = None,
    ) -> None:
        self.database = database
        self.actor = actor
        self._keyring = keyring
        self._audit_key = audit_key  # MCP_AUDIT_KEY: keys the audit rows this store writes
        self._service_name = service_name
        self._owns_database = owns_database
        # In-process writers wait for a rotation to finish *and* swap the keyring, so they
        # encrypt under the new key instead of failing on the retired one.
        self._write_lock = threading.Lock()
        self._reads = ReadBatches(database)

    @classmethod
    def from_settings(
        cls, settings: McpAuthSettings, database: Database | None = None, *, actor: str | None = None
    ) -> DatabaseTokenStore:
        keyring = settings.keyring()
        owns = database is None
        return cls(
            database if database is not None else open_database(settings),
            keyring,
            actor=actor or settings.operator,
            service_name=settings.service_name,
            owns_database=owns,
            audit_key=settings.audit_key_bytes(),
        )

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    # ----- reads ---------------------------------------------------------------------------

    async def get(self, service: str, key: str) -> str | None:
        row = await self.database.run(
            functools.partial(_select_token, service=service, key=key), autocommit=True, retry=True
        )
        return None if row is None else self._keyring.decrypt(service, key, row)

    def audit_sink(self) -> AuditSink:
        return DatabaseAuditSink(self.database, self._audit_key)

    def writes_audit_to(self, sink: AuditSink) -> bool:
        return (
            isinstance(sink, DatabaseAuditSink) and sink.database is self.database and sink.audit_key == self._audit_key
        )

    async def get_audited(
        self,
        service: str,
        key: str,
        user_email: str | None = None,
        *,
        audit_missing: bool = True,
        tool: str | None = None,
    ) -> str | None:
        """``get`` plus its ``get_token`` audit row, in one trip to a worker thread (one
        connection checkout instead of two: the fast path for handing out a token). On PostgreSQL
        the read and the success row are a single statement in a transaction that commits only
        after the value decrypted, so the log never records a hand-out that did not happen.

        The failure row (undecryptable; "not found" unless ``audit_missing=False``) is committed
        before the error is raised.
        """
        found = await self._audited_read(service, (key,), user_email, tool, "not found" if audit_missing else None)
        return None if found is None else found[1]

    async def get_first_audited(
        self, service: str, keys: Sequence[str], user_email: str | None = None, *, tool: str | None = None
    ) -> tuple[str, str] | None:
        """(key, value) of the first of ``keys`` stored, audited like ``get_audited`` in the same
        single trip (one statement on unkeyed PostgreSQL): the success row names the key used.
        When none is stored: None, and one failure row naming the last key (TokenNotFound's
        message). The found row failing to decrypt raises DecryptionError; later keys are not tried.
        """
        if not keys:
            raise ValueError("get_first_audited needs at least one key")
        missing = str(TokenNotFound(service, keys[-1]))
        return await self._audited_read(service, tuple(keys), user_email, tool, missing)

    async def _audited_read(
        self, service: str, keys: tuple[str, ...], user_email: str | None, tool: str | None, missing: str | None
    ) -> tuple[str, str] | None:
        read = AuditedRead(self._keyring, service, keys, user_email or self.actor, tool, missing, self._audit_key)
        try:
            found = await self._reads.submit(read)
        except Undecryptable as undecryptable:
            failure = read.event(undecryptable.key, "failure", undecryptable.error.message)
            await self.database.run(functools.partial(append, event=failure, key=self._audit_key))
            raise undecryptable.error from None
        if found is None:
            return None
        key, value = found
        if isinstance(value, DecryptionError):
            raise value
        return key, value

    async def list(self, service: str | None = None) -> list[TokenInfo]:
        return await list_tokens(self.database, service)

    async def check(self) -> None:
        """Readiness: the database answers and the default token is stored and decrypts."""
        if self._service_name is None:
            await self.database.check()
            return
        service = self._service_name
        row = await self.database.run(
            functools.partial(_select_token, service=service, key=DEFAULT_KEY),
            autocommit=True,
            retry=True,
            deadline=REQUEST_DEADLINE_SECONDS,
        )
        if row is None:
            slug = self.database.slug
            raise ServiceUnavailable(
                f"no token stored for {service}/{DEFAULT_KEY} (run '{slug} tokens set {service} "
                f"{DEFAULT_KEY}' or '{slug} tokens import-env')"
            )
        try:
            self._keyring.decrypt(service, DEFAULT_KEY, row)
        except DecryptionError as exc:
            raise ServiceUnavailable(exc.message) from None

    # ----- writes --------------------------------------------------------------------------

    async def set(self, service: str, key: str, value: str) -> None:
        await self._write_value("set_token", service, key, value)

    async def import_token(self, service: str, key: str, value: str) -> None:
        """``set`` audited as ``import_env`` (the env store's token moving into the database)."""
        await self._write_value("import_env", service, key, value)

    async def delete(self, service: str, key: str) -> bool:
        def work(conn: Connection) -> tuple[Result, str | None, bool]:
            self._lock_for_write(conn)
            result = conn.execute(delete(tokens).where(tokens.c.service_id == service, tokens.c.key == key))
            return ("success", None, True) if result.rowcount else ("failure", "not found", False)

        return await self._audited("delete_token", service, key, work)

    async def _write_value(self, action: Action, service: str, key: str, value: str) -> None:
        if not service or not key:
            raise ValueError("service and key must not be empty")
        if not value:
            raise ValueError("the token value is empty")

        def work(conn: Connection) -> tuple[Result, str | None, None]:
            self._lock_for_write(conn)
            envelope = self._keyring.encrypt(service, key, value)
            now = datetime.now(UTC)
            stmt = _insert(conn, tokens).values(
                service_id=service,
                key=key,
                ciphertext=envelope.ciphertext,
                nonce=envelope.nonce,
                key_id=envelope.key_id,
                created_at=now,
                updated_at=now,
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=[tokens.c.service_id, tokens.c.key],
                set_={
                    "ciphertext": stmt.excluded.ciphertext,
                    "nonce": stmt.excluded.nonce,
                    "key_id": stmt.excluded.key_id,
                    "updated_at": stmt.excluded.updated_at,
                },
            )
            conn.execute(stmt)
            return "success", None, None

        await self._audited(action, service, key, work)

    def _lock_for_write(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock_shared(TOKENS_LOCK)))
        current = self._keyring.current_id
        if conn.execute(select(retired.c.key_id).where(retired.c.key_id == current)).first():
            raise ConfigError(
                f"MCP_AUTH_ENCRYPTION_KEY (key id {current}) was retired by a key rotation: set it to "
                "the new key (keep old keys only in MCP_AUTH_PREVIOUS_KEYS); nothing was written"
            )

    async def _audited(
        self,
        action: Action,
        service: str,
        key: str | None,
        work: Callable[[Connection], tuple[Result, str | None, T]],
        *,
        new_keyring: Keyring | None = None,
    ) -> T:
        """Run a write and its audit row in one transaction; a refused write is audited too."""

        def tx(conn: Connection) -> T:
            result, detail, value = work(conn)
            append(conn, AuditEvent(action, service, key, self.actor, result, detail), self._audit_key)
            return value

        def locked() -> T:
            with self._write_lock:
                value = self.database.run_sync(tx)
                if new_keyring is not None:
                    self._keyring = new_keyring
                return value

        try:
            return await anyio.to_thread.run_sync(locked)
        except ServiceUnavailable:
            raise  # the database cannot take the failure row either
        except McpAuthError as exc:
            failure = AuditEvent(action, service, key, self.actor, "failure", exc.message)
            with contextlib.suppress(ServiceUnavailable):  # report the refusal, not the outage
                await self.database.run(functools.partial(append, event=failure, key=self._audit_key))
            raise

    # ----- rotation ------------------------------------------------------------------------

    async def rotate_key(self, old_key: str, new_key: str, *, progress: Progress | None = None) -> int:
        """Re-encrypt every token written under ``old_key`` with ``new_key`` (base64 keys).

        All or nothing: a row that neither key opens aborts the rotation. Rows already under
        ``new_key`` are left as they are, so re-running after a partial roll-out is safe.
        Returns the number of rows re-encrypted.
        """
        slug = self.database.slug
        old = parse_key(old_key, name="the old key", slug=slug)
        new = parse_key(new_key, name="the new key", slug=slug)
        source = Keyring(old)
        return await self._rotate(
            source,
            Keyring(new),
            f"the old key (key id {source.current_id})",
            progress,
            new_keyring=self._keyring.rotated_to(new),
        )

    async def rotate_to_current(self, *, progress: Progress | None = None) -> int:
        """Re-encrypt rows written under MCP_AUTH_PREVIOUS_KEYS with MCP_AUTH_ENCRYPTION_KEY."""
        keyring = self._keyring
        return await self._rotate(
            keyring,
            keyring,
            "MCP_AUTH_ENCRYPTION_KEY or in MCP_AUTH_PREVIOUS_KEYS",
            progress,
            new_keyring=None,
        )

    async def _rotate(
        self,
        source: Keyring,
        target: Keyring,
        expected: str,
        progress: Progress | None,
        *,
        new_keyring: Keyring | None,
    ) -> int:
        target_id = target.current_id
        retire = [kid for kid in source.ids if kid != target_id]

        def work(conn: Connection) -> tuple[Result, str | None, int]:
            if conn.dialect.name == "postgresql":
                conn.execute(select(func.pg_advisory_xact_lock(TOKENS_LOCK)))
            count = reencrypt_all(conn, source, target, expected, progress)
            if retire:
                conn.execute(
                    _insert(conn, retired).values([{"key_id": kid} for kid in retire]).on_conflict_do_nothing()
                )
            conn.execute(delete(retired).where(retired.c.key_id == target_id))
            return "success", f"re-encrypted {count} tokens under key id {target_id}", count

        start, result = time.perf_counter(), "failure"
        with tracing.span("mcp_auth.rotate_key", {"mcp_auth.token_store": self.name}):
            try:
                count = await self._audited("rotate_key", ROTATION_SERVICE, None, work, new_keyring=new_keyring)
                result = "success"
            finally:
                observe("key_rotation", (result,), time.perf_counter() - start)
        return count

    async def close(self) -> None:
        if self._owns_database:
            self.database.close()

    async def import_many(self, rows: Iterable[tuple[str, str, str]]) -> int:
        """Store many (service, key, value) tokens in ONE transaction, all or nothing: each
        encrypted and upserted as ``set`` does, with its own ``set_token`` audit row (detail
        ``import``). Returns how many. InvalidTokenRow (a ValueError) names the first bad row
        (mcp_auth.token_import.check_rows: a bad name, an empty value, a (service, key) twice);
        then nothing is written. Like ``set``: the writers' lock, and no retired current key.
        """
        checked = check_rows(rows)
        if not checked:
            return 0

        def tx(conn: Connection) -> None:
            self._lock_for_write(conn)
            now = datetime.now(UTC)
            import_rows(conn, self._keyring, checked, actor=self.actor, now=now, audit_key=self._audit_key)

        def locked() -> None:
            with self._write_lock:  # as in _audited: encrypt under the keyring a rotation installs
                self.database.run_sync(tx)

        try:
            await anyio.to_thread.run_sync(locked)
        except ServiceUnavailable:
            raise  # the database cannot take the failure row either
        except McpAuthError as exc:
            # One row for the refused import (a refused ``set`` leaves one too); per-token rows
            # would claim writes that never happened.
            services = {service for service, _, _ in checked}
            service = services.pop() if len(services) == 1 else ROTATION_SERVICE
            detail = f"{IMPORT_DETAIL} of {len(checked)} tokens refused: {exc.message}"
            failure = AuditEvent("set_token", service, None, self.actor, "failure", detail)
            with contextlib.suppress(ServiceUnavailable):  # report the refusal, not the outage
                await self.database.run(functools.partial(append, event=failure, key=self._audit_key))
            raise
        return len(checked)


async def list_tokens(database: Database, service: str | None = None) -> list[TokenInfo]:
    """Stored tokens without values; needs no encryption key."""

    def work(conn: Connection) -> list[TokenInfo]:
        query = select(
            tokens.c.service_id, tokens.c.key, tokens.c.key_id, tokens.c.created_at, tokens.c.updated_at
        ).order_by(tokens.c.service_id, tokens.c.key)
        if service is not None:
            query = query.where(tokens.c.service_id == service)
        return [TokenInfo(*row[:3], as_utc(row[3]), as_utc(row[4])) for row in conn.execute(query)]

    return await database.run(work, autocommit=True, retry=True)
