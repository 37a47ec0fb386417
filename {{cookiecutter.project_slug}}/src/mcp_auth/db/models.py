"""The database schema as SQLAlchemy Core tables (the migrations create exactly this).

``tests/mcp_auth/test_migrations.py`` compares these tables with a migrated database, so the
runtime code and the Alembic history cannot drift apart.
"""

from __future__ import annotations

from mcp_auth.audit import ACTIONS, RESULTS
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    FetchedValue,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

# SQLite only treats INTEGER PRIMARY KEY as the auto-incrementing rowid.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


tokens = Table(
    "tokens",
    metadata,
    Column("id", Id, primary_key=True),
    Column("service_id", String(255), nullable=False),
    Column("key", String(255), nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),  # AES-256-GCM ciphertext + 16-byte tag
    Column("nonce", LargeBinary, nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("service_id", "key"),
)

audit_log = Table(
    "audit_log",
    metadata,
    # On PostgreSQL a trigger assigns id, prev_hash and hash under an advisory lock (see the
    # 0001 migration); on SQLite mcp_auth.db.audit_log computes them inside a BEGIN IMMEDIATE transaction.
    # No sequence: ids are dense and in chain order.
    Column("id", Id, primary_key=True, autoincrement=False, server_default=FetchedValue()),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("service_id", String(255), nullable=False),
    Column("action", String(32), nullable=False),
    Column("token_key", String(255), nullable=True),
    Column("user_email", String(320), nullable=False),
    Column("result", String(16), nullable=False),
    Column("detail", Text, nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("tool", String(255), nullable=True),  # migration 0002
    # How ``hash`` was computed (mcp_auth.audit.SCHEME_*); 1 for rows older than migration 0002.
    Column("hash_scheme", SmallInteger, nullable=False, server_default=text("1")),
    CheckConstraint(_one_of("action", ACTIONS), name="action"),
    CheckConstraint(_one_of("result", RESULTS), name="result"),
    Index(None, "service_id", "at"),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True),
    Column("key_hash", String(64), nullable=False),  # SHA-256 hex of the whole key
    Column("prefix", String(16), nullable=False),  # the first characters, to recognise a key in lists
    Column("email", String(320), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    # Space-separated scope tokens (migration 0003); NULL or empty: unrestricted.
    Column("scopes", Text, nullable=True),
    UniqueConstraint("key_hash"),
)

retired_encryption_keys = Table(
    "retired_encryption_keys",
    metadata,
    # Key ids a rotation moved away from. Writers refuse to encrypt under a retired key, so a
    # replica still configured with the old key cannot write rows the rotated fleet cannot read.
    Column("key_id", String(16), primary_key=True),
    Column("retired_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
