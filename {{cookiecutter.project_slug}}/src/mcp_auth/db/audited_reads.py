"""Audited reads of upstream tokens: the read and its ``get_token`` audit row in one
transaction, and the group commit that lets concurrent reads share one.

Concurrent reads of one event loop are batched: one worker-thread trip, one transaction, so the
audit chain's lock and the commit (a WAL flush) are paid once per batch instead of once per read;
every caller still returns only after its own row is committed. On PostgreSQL a batch (of one,
too) takes two round trips, pipelined (``read_batch_pg``). A read that cannot decrypt rolls its
batch back, and each read of that batch then runs on its own.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from mcp_auth.audit import AuditEvent, Result, clip_detail
from mcp_auth.crypto import Envelope, Keyring
from mcp_auth.db.audit_log import HEAD_SQL, append, chained_rows, head_of
from mcp_auth.db.engine import REQUEST_DEADLINE_SECONDS, Database, driver_errors
from mcp_auth.db.group_commit import GroupCommit, each_its_own
from mcp_auth.db.models import tokens
from mcp_auth.errors import DecryptionError
from psycopg.pq import TransactionStatus
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

Found = tuple[str, str | DecryptionError] | None
"""(key, value), or (key, error) once the error's failure row is written; None: nothing stored."""

_SELECT_FIRST = select(tokens.c.key, tokens.c.key_id, tokens.c.nonce, tokens.c.ciphertext).where(
    tokens.c.service_id == bindparam("service"), tokens.c.key.in_(bindparam("keys", expanding=True))
)

# An audited read on PostgreSQL: the read and its audit row in one statement, so one round trip
# and one commit (the chain trigger still links the row). Of the keys asked for, the first one
# stored wins, and the row names it. It writes "success" only for a row under a key id this
# keyring holds; the not-found row (naming missing_key) only when asked. Plain driver SQL: no
# compilation per call, and psycopg prepares it on a connection after a few uses.
_GET_AUDITED_PG = """
WITH token AS (
    SELECT key, key_id, nonce, ciphertext FROM tokens
    WHERE service_id = %(service)s AND key = ANY(%(keys)s)
    ORDER BY array_position(%(keys)s::text[], key::text) LIMIT 1
), audit AS (
    INSERT INTO audit_log (at, service_id, action, token_key, user_email, result, detail, tool)
    SELECT %(at)s, %(service)s, 'get_token', COALESCE(token.key, %(missing_key)s), %(user_email)s,
           CASE WHEN token.key_id IS NULL THEN 'failure' ELSE 'success' END,
           CASE WHEN token.key_id IS NULL THEN %(missing_detail)s END, %(tool)s
    FROM (SELECT 1) AS one LEFT JOIN token ON true
    WHERE token.key_id = ANY(%(key_ids)s) OR (token.key_id IS NULL AND %(audit_missing)s)
)
SELECT key, key_id, nonce, ciphertext FROM token
"""


class Undecryptable(Exception):
    """Raised inside a transaction to roll it back; carries the DecryptionError to report."""

    def __init__(self, key: str, error: DecryptionError) -> None:
        super().__init__(error.message)
        self.key = key
        self.error = error


@dataclass(frozen=True, slots=True)
class AuditedRead:
    """The unit of work of an audited read, run in one transaction on a worker thread: the first
    of ``keys`` stored, and its ``get_token`` row (or, when none is, a failure row naming the last
    key with ``missing_detail``; no row when that is None)."""

    keyring: Keyring
    service: str
    keys: tuple[str, ...]
    actor: str
    tool: str | None
    missing_detail: str | None
    audit_key: bytes | None

    def event(self, key: str, result: Result, detail: str | None = None) -> AuditEvent:
        return AuditEvent("get_token", self.service, key, self.actor, result, detail, tool=self.tool)

    def __call__(self, conn: Connection) -> tuple[str, str | DecryptionError] | None:
        """(key, value), or (key, error) once the error's failure row is written; None: nothing stored."""
        # One statement when the database links the audit row itself (PostgreSQL, unkeyed);
        # otherwise read, then append the row linked here (keyed, or SQLite).
        one_statement = conn.dialect.name == "postgresql" and self.audit_key is None
        found = self._read_pg(conn) if one_statement else self._read(conn)
        if found is None:
            return None
        key, row = found
        try:
            value = self.keyring.decrypt(self.service, key, row)
        except DecryptionError as exc:
            if one_statement and row.key_id in self.keyring:
                raise Undecryptable(key, exc) from None  # roll back the optimistic success row
            append(conn, self.event(key, "failure", exc.message), self.audit_key)
            return key, exc
        if not one_statement:
            append(conn, self.event(key, "success"), self.audit_key)
        return key, value

    def _read_pg(self, conn: Connection) -> tuple[str, Envelope] | None:
        # One statement reads the row and writes its success row, inside a transaction that
        # commits only once the value decrypted: a row that does not authenticate (tampering)
        # rolls the success row back and gets a failure row instead.
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver_errors(conn):
            found = driver.execute(_GET_AUDITED_PG, self.parameters()).fetchone()
        return None if found is None else (found[0], _envelope(found))

    def parameters(self) -> dict[str, object]:
        """The parameters of ``_GET_AUDITED_PG`` (``_READ_FIRST_PG`` uses the first two)."""
        return {
            "service": self.service,
            "keys": list(self.keys),
            "at": datetime.now(UTC),
            "user_email": self.actor,
            "key_ids": list(self.keyring.ids),
            "audit_missing": self.missing_detail is not None,
            "missing_key": self.keys[-1],
            "missing_detail": clip_detail(self.missing_detail),
            "tool": self.tool,
        }

    def _read(self, conn: Connection) -> tuple[str, Envelope] | None:
        rows = {row.key: row for row in conn.execute(_SELECT_FIRST, {"service": self.service, "keys": self.keys})}
        key = next((key for key in self.keys if key in rows), None)
        if key is None:
            if self.missing_detail is not None:
                append(conn, self.event(self.keys[-1], "failure", self.missing_detail), self.audit_key)
            return None
        row = rows[key]
        return key, Envelope(row.key_id, bytes(row.nonce), bytes(row.ciphertext))


_READ_FIRST_PG = """
SELECT key, key_id, nonce, ciphertext FROM tokens
WHERE service_id = %(service)s AND key = ANY(%(keys)s)
ORDER BY array_position(%(keys)s::text[], key::text) LIMIT 1
"""
_INSERT_ROW_PG = """
INSERT INTO audit_log (id, at, service_id, action, token_key, user_email, result, detail, tool, prev_hash, hash,
                       hash_scheme)
VALUES (%(id)s, %(at)s, %(service_id)s, %(action)s, %(token_key)s, %(user_email)s, %(result)s, %(detail)s, %(tool)s,
        %(prev_hash)s, %(hash)s, %(hash_scheme)s)
"""


class _Retry(Exception):
    """A read of a pipelined batch could not be decrypted: roll the batch back, run each alone."""


def _envelope(row: Any) -> Envelope:
    return Envelope(row[1], bytes(row[2]), bytes(row[3]))


def read_batch_pg(conn: Connection, reads: list[AuditedRead]) -> list[Found]:
    """A batch on PostgreSQL in two round trips, whatever its size: BEGIN, the chain's head
    (keyed) and every read in one pipelined flight; then (keyed) the linked rows and COMMIT in a
    second. Runs on an AUTOCOMMIT connection and owns its transaction. Raises _Retry, rolled back,
    when a row does not decrypt (the single-read path then reports it exactly)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    key = reads[0].audit_key  # one store: one key for all its reads
    with driver_errors(conn):
        try:
            with driver.pipeline():
                driver.execute("BEGIN")
                head = driver.execute(HEAD_SQL) if key is not None else None
                sql = _READ_FIRST_PG if key is not None else _GET_AUDITED_PG
                cursors = [driver.execute(sql, read.parameters(), prepare=True) for read in reads]
            found = [_decrypted(read, cursor.fetchone()) for read, cursor in zip(reads, cursors, strict=True)]
            with driver.pipeline():
                if key is not None:
                    events = [_event_of(read, result) for read, result in zip(reads, found, strict=True)]
                    rows = chained_rows(head_of(head.fetchone() if head else None), [e for e in events if e], key)
                    if rows:
                        driver.cursor().executemany(_INSERT_ROW_PG, rows)
                driver.execute("COMMIT")
        except BaseException:
            _roll_back(driver)
            raise
    return found


def _roll_back(driver: psycopg.Connection[Any]) -> None:
    """End the batch's transaction; on a broken connection there is none left to end (the
    original error is the one to report)."""
    if driver.closed or driver.info.transaction_status == TransactionStatus.IDLE:
        return
    with contextlib.suppress(psycopg.Error):
        driver.execute("ROLLBACK")


def _read_all(conn: Connection, reads: list[AuditedRead]) -> list[Found]:
    return [read(conn) for read in reads]


def _decrypted(read: AuditedRead, row: Any) -> Found:
    if row is None:
        return None
    try:
        return str(row[0]), read.keyring.decrypt(read.service, str(row[0]), _envelope(row))
    except DecryptionError:
        raise _Retry from None


def _event_of(read: AuditedRead, found: Found) -> AuditEvent | None:
    if found is None:
        return None if read.missing_detail is None else read.event(read.keys[-1], "failure", read.missing_detail)
    return read.event(found[0], "success")


class ReadBatches:
    """Concurrent audited reads, group-committed (``GroupCommit``)."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._batches: GroupCommit[AuditedRead, Found] = GroupCommit(self._run)

    async def submit(self, read: AuditedRead) -> Found:
        return await self._batches.submit(read)

    async def _run(self, reads: list[AuditedRead]) -> list[Found | BaseException]:
        postgres = self._database.is_postgres
        if postgres or len(reads) > 1:
            try:
                if postgres:
                    pipelined = functools.partial(read_batch_pg, reads=reads)
                    return list(await self._database.run(pipelined, autocommit=True, deadline=REQUEST_DEADLINE_SECONDS))
                together = functools.partial(_read_all, reads=reads)
                return list(await self._database.run(together, deadline=REQUEST_DEADLINE_SECONDS))
            except (Undecryptable, _Retry):
                pass  # rolled back: find out whose it was, each read in a transaction of its own
            except Exception as exc:
                return list(each_its_own(exc, len(reads)))
        outcomes: list[Found | BaseException] = []
        for read in reads:
            try:
                outcomes.append(await self._database.run(read, deadline=REQUEST_DEADLINE_SECONDS))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes
