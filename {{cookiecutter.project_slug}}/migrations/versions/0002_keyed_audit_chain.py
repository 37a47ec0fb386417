"""audit_log: tool column, hash schemes (HMAC with MCP_AUDIT_KEY), TRUNCATE refused

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

- ``tool``: the tool whose call needed the token, on get_token rows.
- ``hash_scheme``: 1 = SHA-256 over the nine fields of 0001 (every row written before this
  migration); 2 = SHA-256 with ``tool`` appended (unkeyed writers from now on: the trigger below);
  3 = HMAC-SHA256 with ``tool`` appended, keyed with MCP_AUDIT_KEY. Scheme 3 is computed by the
  application only: the key never enters the database, so the database owner cannot recompute it.
  A scheme 3 writer takes the chain lock itself (``mcp_auth_audit_head()``), computes the link and
  inserts id, prev_hash and hash; the trigger checks that the row continues the head. Once the
  head is keyed, unkeyed writers are refused (SQLSTATE MC001) instead of silently downgrading it.
- A statement trigger refuses TRUNCATE (row triggers never see it).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

# pg_advisory_xact_lock key of the audit chain (as in 0001): 0x6D63705F61756469, "mcp_audi".
_LOCK = "7882267327787787369"

_FIELDS_0001 = """
        encode(convert_to(NEW.prev_hash, 'UTF8'), 'hex'),
        encode(convert_to(NEW.id::text, 'UTF8'), 'hex'),
        encode(convert_to(to_char(NEW.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), 'UTF8'), 'hex'),
        encode(convert_to(NEW.service_id, 'UTF8'), 'hex'),
        encode(convert_to(NEW.action, 'UTF8'), 'hex'),
        COALESCE(encode(convert_to(NEW.token_key, 'UTF8'), 'hex'), '-'),
        encode(convert_to(NEW.user_email, 'UTF8'), 'hex'),
        encode(convert_to(NEW.result, 'UTF8'), 'hex'),
        COALESCE(encode(convert_to(NEW.detail, 'UTF8'), 'hex'), '-')"""

# Both scripts are constant SQL: the only substitutions are this file's own constants.
_PG_UPGRADE = f"""
CREATE OR REPLACE FUNCTION mcp_auth_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head_id bigint;
    head_hash text;
    head_scheme smallint;
BEGIN
    PERFORM pg_advisory_xact_lock({_LOCK});
    SELECT a.id, a.hash, a.hash_scheme INTO head_id, head_hash, head_scheme
        FROM audit_log a ORDER BY a.id DESC LIMIT 1;
    IF NEW.hash IS NOT NULL THEN
        -- A keyed writer computed the link under this same lock: it must continue the head.
        IF NEW.hash_scheme IS DISTINCT FROM 3
           OR NEW.id IS DISTINCT FROM COALESCE(head_id, 0) + 1
           OR NEW.prev_hash IS DISTINCT FROM COALESCE(head_hash, repeat('0', 64)) THEN
            RAISE EXCEPTION 'audit_log: a supplied row must continue the chain head' USING ERRCODE = 'MC002';
        END IF;
        RETURN NEW;
    END IF;
    IF head_scheme = 3 THEN
        RAISE EXCEPTION 'audit_log is keyed with MCP_AUDIT_KEY: unkeyed writers are refused'
            USING ERRCODE = 'MC001';
    END IF;
    NEW.id := COALESCE(head_id, 0) + 1;
    NEW.prev_hash := COALESCE(head_hash, repeat('0', 64));
    NEW.hash_scheme := 2;
    NEW.hash := encode(sha256(convert_to(concat_ws('.',{_FIELDS_0001},
        COALESCE(encode(convert_to(NEW.tool, 'UTF8'), 'hex'), '-')), 'UTF8')), 'hex');
    RETURN NEW;
END
$$;

CREATE FUNCTION mcp_auth_audit_head() RETURNS TABLE (id bigint, hash text, hash_scheme smallint)
LANGUAGE plpgsql AS $$
BEGIN
    -- Lock first, then read: RETURN QUERY takes a new snapshot, so it sees the row the previous
    -- lock holder committed.
    PERFORM pg_advisory_xact_lock({_LOCK});
    RETURN QUERY SELECT a.id, a.hash::text, a.hash_scheme FROM audit_log a ORDER BY a.id DESC LIMIT 1;
END
$$;

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION mcp_auth_audit_append_only();
"""  # noqa: S608

_PG_DOWNGRADE = f"""
DROP TRIGGER audit_log_no_truncate ON audit_log;
DROP FUNCTION mcp_auth_audit_head();
CREATE OR REPLACE FUNCTION mcp_auth_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head_id bigint;
    head_hash text;
BEGIN
    PERFORM pg_advisory_xact_lock({_LOCK});
    SELECT a.id, a.hash INTO head_id, head_hash FROM audit_log a ORDER BY a.id DESC LIMIT 1;
    NEW.id := COALESCE(head_id, 0) + 1;
    NEW.prev_hash := COALESCE(head_hash, repeat('0', 64));
    NEW.hash := encode(sha256(convert_to(concat_ws('.',{_FIELDS_0001}), 'UTF8')), 'hex');
    RETURN NEW;
END
$$;
"""  # noqa: S608


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite supports it): batch mode would rebuild the table on SQLite and drop
    # its append-only triggers.
    op.add_column("audit_log", sa.Column("tool", sa.String(255), nullable=True))
    op.add_column("audit_log", sa.Column("hash_scheme", sa.SmallInteger(), nullable=False, server_default=sa.text("1")))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_UPGRADE)


_SQLITE_TRIGGERS = [  # as in 0001: dropping a column rebuilds the table on SQLite, without them
    "CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
]


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute(_PG_DOWNGRADE)
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("hash_scheme")
        batch.drop_column("tool")
    if not postgres:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
