"""Writing many tokens at once: the SQL behind ``tokens import`` (``DatabaseTokenStore.import_many``).

Runs inside the caller's transaction, after the writer's lock was taken, with rows already checked
(no (service, key) twice: one statement cannot upsert a row twice). Each row is encrypted exactly
as ``set`` encrypts it and upserted the same way (an existing row keeps its created_at).
PostgreSQL: a binary COPY into a temporary table, then one INSERT ... SELECT ... ON CONFLICT.
Measured, 10k rows: ~0.08 s vs ~0.15 s for one INSERT ... SELECT FROM unnest(arrays) (psycopg
dumps a bytea array element by element in Python) and ~40 s for 10k ``set`` calls. SQLite: one
executemany. The audit rows go through ``append_all`` (keyed or not, both dialects).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mcp_auth.audit import AuditEvent
from mcp_auth.crypto import Keyring
from mcp_auth.db.audit_log import append_all
from mcp_auth.db.engine import driver_errors
from mcp_auth.db.models import tokens
from sqlalchemy import bindparam
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection

IMPORT_DETAIL = "import"
"""The ``detail`` of an imported token's ``set_token`` audit row."""

# ON COMMIT DROP: gone with the transaction, committed or rolled back, so a pooled connection
# never keeps it. Needs the TEMPORARY privilege on the database (PUBLIC holds it by default).
_STAGE_PG = (
    "CREATE TEMPORARY TABLE mcp_auth_import (service_id text, key text, ciphertext bytea, nonce bytea) ON COMMIT DROP"
)
_COPY_PG = "COPY mcp_auth_import (service_id, key, ciphertext, nonce) FROM STDIN (FORMAT BINARY)"
_UPSERT_PG = """
INSERT INTO tokens (service_id, key, ciphertext, nonce, key_id, created_at, updated_at)
SELECT service_id, key, ciphertext, nonce, %(key_id)s, %(now)s, %(now)s FROM mcp_auth_import
ON CONFLICT (service_id, key) DO UPDATE SET
    ciphertext = EXCLUDED.ciphertext, nonce = EXCLUDED.nonce, key_id = EXCLUDED.key_id,
    updated_at = EXCLUDED.updated_at
"""


def _upsert_pg(conn: Connection, keyring: Keyring, rows: Sequence[tuple[str, str, str]], now: datetime) -> None:
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver_errors(conn), driver.cursor(binary=True) as cursor:
        cursor.execute(_STAGE_PG)
        with cursor.copy(_COPY_PG) as copy:
            copy.set_types(["text", "text", "bytea", "bytea"])
            for service, key, value in rows:  # encrypting while the COPY streams
                envelope = keyring.encrypt(service, key, value)
                copy.write_row((service, key, envelope.ciphertext, envelope.nonce))
        cursor.execute(_UPSERT_PG, {"key_id": keyring.current_id, "now": now})


def _upsert_sqlite(conn: Connection, keyring: Keyring, rows: Sequence[tuple[str, str, str]], now: datetime) -> None:
    stmt = sqlite.insert(tokens).values(
        service_id=bindparam("s"),
        key=bindparam("k"),
        ciphertext=bindparam("c"),
        nonce=bindparam("n"),
        key_id=bindparam("kid"),
        created_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[tokens.c.service_id, tokens.c.key],
        set_={name: stmt.excluded[name] for name in ("ciphertext", "nonce", "key_id", "updated_at")},
    )
    parameters = []
    for service, key, value in rows:
        envelope = keyring.encrypt(service, key, value)
        parameters.append(
            {"s": service, "k": key, "c": envelope.ciphertext, "n": envelope.nonce, "kid": envelope.key_id, "now": now}
        )
    conn.execute(stmt, parameters)


def import_rows(
    conn: Connection,
    keyring: Keyring,
    rows: Sequence[tuple[str, str, str]],
    *,
    actor: str,
    now: datetime,
    audit_key: bytes | None,
) -> None:
    """Upsert ``rows`` (service, key, value) encrypted, and chain one ``set_token`` row per token
    (detail ``import``; never the value) in the caller's transaction."""
    if conn.dialect.name == "postgresql":
        _upsert_pg(conn, keyring, rows, now)
    else:
        _upsert_sqlite(conn, keyring, rows, now)
    events = [
        AuditEvent("set_token", service, key, actor, "success", IMPORT_DETAIL, at=now) for service, key, _ in rows
    ]
    append_all(conn, events, audit_key)
