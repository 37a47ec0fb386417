"""Re-encrypting every stored token under a new key: the bulk work of a key rotation.

Runs inside the rotation's transaction (``DatabaseTokenStore._rotate``), after writers were locked
out: a failed or killed rotation (SIGKILL, lost connection) commits nothing, so every row stays
readable under the old key. PostgreSQL: read the rows, binary COPY of their new (id, ciphertext,
nonce) into a temporary table while re-encrypting, then one UPDATE ... FROM, which is HOT (no
index entries, no new pages) thanks to the fillfactor of migration 0004. SQLite updates the rows
in one executemany.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mcp_auth.crypto import Envelope, Keyring, MissingKeyError
from mcp_auth.db.engine import driver_errors
from mcp_auth.db.models import tokens
from mcp_auth.errors import DecryptionError
from psycopg.types.string import BytesBinaryDumper
from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection

Progress = Callable[[int, int], None]
"""``progress(done, total)``, called from a worker thread while a rotation re-encrypts."""

_PROGRESS_EVERY = 500

# Measured with benchmarks/bench_vault.py (2 cores, PostgreSQL 15), 100k rows: 0.6-0.9 s, against
# 1.1-1.6 s for the DELETE ... RETURNING + COPY back this replaced, and a floor (the same database
# work without cryptography) of 0.35-0.55 s: the rest is AES-GCM and the Python around each row.
# On a table whose pages are still full (the first rotation after 0004) the UPDATE is not HOT:
# then about as fast as the DELETE + COPY was. No measurable gain, so not kept: re-encrypting in a
# worker thread while the COPY streams (AESGCM holds the GIL), psycopg's QueuedLibpqWriter,
# re-encrypting every row before the COPY; COPY + UPDATE in chunks (to overlap the UPDATE with
# re-encryption) was slower, and so was an UPDATE ... FROM unnest(arrays).
_SELECT = "SELECT id, service_id, key, ciphertext, nonce, key_id FROM tokens WHERE key_id <> %s"
# ON COMMIT DROP: gone with the transaction, committed or rolled back. Needs the TEMPORARY
# privilege on the database (PUBLIC holds it by default; rotations run as the owner).
_STAGE = "CREATE TEMPORARY TABLE mcp_auth_rotation (id int8, ciphertext bytea, nonce bytea) ON COMMIT DROP"
_COPY = "COPY mcp_auth_rotation (id, ciphertext, nonce) FROM STDIN (FORMAT BINARY)"
_UPDATE = (
    "UPDATE tokens SET ciphertext = r.ciphertext, nonce = r.nonce, key_id = %s "
    "FROM mcp_auth_rotation r WHERE tokens.id = r.id"
)
# Enough work_mem (this transaction only) for the UPDATE's hash of every row's id and address,
# ~55 bytes each: split into batches, the join re-reads the whole table once per batch (1M rows at
# the default 4MB: 8 batches, the UPDATE took 2.9-3.3 s instead of 1.7-2.4 s). Capped: past ~4M
# rows, batches again rather than a server short of memory.
_WORK_MEM = (
    "SELECT set_config('work_mem', greatest(pg_size_bytes(current_setting('work_mem')), %s) / 1024 || 'kB', true)"
)
_HASH_BYTES_PER_ROW = 64
_WORK_MEM_CAP = 256 * 1024 * 1024


class _Aborted(Exception):
    """Raised inside the COPY so the driver's CopyFail carries no token names to the server log."""

    def __init__(self, error: DecryptionError) -> None:
        super().__init__()
        self.error = error


def _reencrypt(
    rows: Sequence[Any], source: Keyring, target: Keyring, expected: str, progress: Progress | None
) -> Iterator[tuple[bytes, bytes]]:
    """(ciphertext, nonce) under the target key of each row (id, service, key, ciphertext, nonce,
    key_id), in order; any row that does not open raises, which rolls the rotation back."""
    total = len(rows)
    items = ((service, key, Envelope(kid, nonce, ciphertext)) for _, service, key, ciphertext, nonce, kid in rows)
    try:
        for done, sealed in enumerate(source.reseal(target, items), 1):
            yield sealed
            if progress is not None and (done % _PROGRESS_EVERY == 0 or done == total):
                progress(done, total)
    except MissingKeyError as exc:
        raise DecryptionError(
            f"rotation aborted, nothing was re-encrypted: token {exc.service}/{exc.key} was "
            f"encrypted with key id {exc.key_id}, which is not {expected}"
        ) from None
    except DecryptionError as exc:
        raise DecryptionError(f"rotation aborted, nothing was re-encrypted: {exc.message}") from None
    if progress is not None and not total:
        progress(0, 0)


def _update_pg(conn: Connection, source: Keyring, target: Keyring, expected: str, progress: Progress | None) -> int:
    """Re-encrypt on PostgreSQL; returns the number of rows. Writers are locked out."""
    driver = conn.connection.driver_connection
    assert driver is not None
    key_id = target.current_id
    try:
        # The driver cursor: plain tuples (no SQLAlchemy rows) and binary transfer of the bytea.
        with driver_errors(conn), driver.cursor(binary=True) as cursor:
            rows = cursor.execute(_SELECT, (key_id,)).fetchall()
            if not rows:
                if progress is not None:
                    progress(0, 0)
                return 0
            cursor.execute(_WORK_MEM, (min(len(rows) * _HASH_BYTES_PER_ROW, _WORK_MEM_CAP),))
            cursor.execute(_STAGE)
            # psycopg's default dumper for the bytea oid (set_types) is a Python subclass that also
            # takes psycopg.Binary: one Python call per value. Its C base halves the COPY's cost.
            cursor.adapters.register_dumper(None, BytesBinaryDumper)
            with cursor.copy(_COPY) as copy:
                copy.set_types(["int8", "bytea", "bytea"])
                try:
                    sealed = _reencrypt(rows, source, target, expected, progress)
                    for row, (ciphertext, nonce) in zip(rows, sealed, strict=True):
                        copy.write_row((row[0], ciphertext, nonce))
                except DecryptionError as exc:
                    raise _Aborted(exc) from None
            cursor.execute(_UPDATE, (key_id,))
    except _Aborted as aborted:
        raise aborted.error from None
    return len(rows)


def reencrypt_all(conn: Connection, source: Keyring, target: Keyring, expected: str, progress: Progress | None) -> int:
    """Re-encrypt every row not yet under ``target``'s current key; returns how many.

    ``expected`` names the keys a row may be under, for the error that aborts (rolls back) the
    rotation when one does not open.
    """
    if conn.dialect.name == "postgresql":
        return _update_pg(conn, source, target, expected, progress)
    target_id = target.current_id
    columns = (tokens.c.id, tokens.c.service_id, tokens.c.key, tokens.c.ciphertext, tokens.c.nonce, tokens.c.key_id)
    rows = conn.execute(select(*columns).where(tokens.c.key_id != target_id)).all()
    sealed = _reencrypt(rows, source, target, expected, progress)
    updates = [(row[0], ciphertext, nonce) for row, (ciphertext, nonce) in zip(rows, sealed, strict=True)]
    _apply(conn, updates, target_id)
    return len(updates)


def _apply(conn: Connection, updates: list[tuple[int, bytes, bytes]], key_id: str) -> None:
    """Write the re-encrypted rows on SQLite (one executemany)."""
    if not updates:
        return
    stmt = (
        tokens.update()
        .where(tokens.c.id == bindparam("row_id"))
        .values(ciphertext=bindparam("new_ciphertext"), nonce=bindparam("new_nonce"), key_id=key_id)
    )
    conn.execute(stmt, [{"row_id": i, "new_ciphertext": c, "new_nonce": n} for i, c, n in updates])
