"""tokens, audit_log (hash-chained, append-only), api_keys, retired_encryption_keys

Revision ID: 0001
Revises:
Create Date: 2025-11-08

The audit chain, in one place for both implementations (PostgreSQL trigger below, Python in
mcp_auth.audit.chain_hash): hash = sha256 hex of the fields prev_hash, id, at (UTC,
YYYY-MM-DDTHH:MM:SS.ffffff), service_id, action, token_key, user_email, result, detail, each
written as the hex of its UTF-8 bytes ('-' for NULL) and joined with '.'.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TZ = sa.DateTime(timezone=True)

# pg_advisory_xact_lock key of the audit chain: 0x6D63705F61756469, "mcp_audi".
_PG_FUNCTIONS = """
CREATE FUNCTION mcp_auth_audit_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head_id bigint;
    head_hash text;
BEGIN
    -- One appender at a time until the inserting transaction ends, so the chain cannot fork
    -- (and the primary key on id rejects a second row claiming the same place regardless).
    PERFORM pg_advisory_xact_lock(7882267327787787369);
    -- A new statement in a volatile function takes a new snapshot: it sees the row the
    -- previous lock holder committed.
    SELECT a.id, a.hash INTO head_id, head_hash FROM audit_log a ORDER BY a.id DESC LIMIT 1;
    NEW.id := COALESCE(head_id, 0) + 1;
    NEW.prev_hash := COALESCE(head_hash, repeat('0', 64));
    -- Inline expressions rather than a helper function: one cached plan, no per-field call cost.
    NEW.hash := encode(sha256(convert_to(concat_ws('.',
        encode(convert_to(NEW.prev_hash, 'UTF8'), 'hex'),
        encode(convert_to(NEW.id::text, 'UTF8'), 'hex'),
        encode(convert_to(to_char(NEW.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), 'UTF8'), 'hex'),
        encode(convert_to(NEW.service_id, 'UTF8'), 'hex'),
        encode(convert_to(NEW.action, 'UTF8'), 'hex'),
        COALESCE(encode(convert_to(NEW.token_key, 'UTF8'), 'hex'), '-'),
        encode(convert_to(NEW.user_email, 'UTF8'), 'hex'),
        encode(convert_to(NEW.result, 'UTF8'), 'hex'),
        COALESCE(encode(convert_to(NEW.detail, 'UTF8'), 'hex'), '-')), 'UTF8')), 'hex');
    RETURN NEW;
END
$$;

CREATE FUNCTION mcp_auth_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END
$$;

CREATE TRIGGER audit_log_chain BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION mcp_auth_audit_chain();
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION mcp_auth_audit_append_only();
"""

_SQLITE_TRIGGERS = [
    "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
    "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END",
]


def upgrade() -> None:
    op.create_table(
        "tokens",
        sa.Column("id", Id, primary_key=True),
        sa.Column("service_id", sa.String(255), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_tokens"),
        sa.UniqueConstraint("service_id", "key", name="uq_tokens_service_id_key"),
    )
    op.create_table(
        "audit_log",
        # No sequence: the chain trigger (PostgreSQL) or the writer (SQLite) assigns id.
        sa.Column("id", Id, autoincrement=False, nullable=False),
        sa.Column("at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("service_id", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("token_key", sa.String(255), nullable=True),
        sa.Column("user_email", sa.String(320), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        sa.CheckConstraint(
            "action IN ('get_token', 'set_token', 'delete_token', 'rotate_key', 'import_env')",
            name="ck_audit_log_action",
        ),
        sa.CheckConstraint("result IN ('success', 'failure')", name="ck_audit_log_result"),
    )
    op.create_index("ix_audit_log_service_id_at", "audit_log", ["service_id", "at"])
    op.create_table(
        "api_keys",
        sa.Column("id", Id, primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.Column("last_used_at", TZ, nullable=True),
        sa.Column("expires_at", TZ, nullable=True),
        sa.Column("revoked_at", TZ, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_table(
        "retired_encryption_keys",
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("retired_at", TZ, nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("key_id", name="pk_retired_encryption_keys"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTIONS)
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    op.drop_table("retired_encryption_keys")
    op.drop_table("api_keys")
    op.drop_index("ix_audit_log_service_id_at", table_name="audit_log")
    op.drop_table("audit_log")  # its triggers go with it
    op.drop_table("tokens")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION mcp_auth_audit_chain(); DROP FUNCTION mcp_auth_audit_append_only();")
