"""api_keys: scopes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

- ``scopes``: the key's scopes, space-separated (as in OAuth's ``scope``). NULL (every key created
  before this migration) or empty means unrestricted: the key may call every tool.

The runtime role's table-level SELECT on api_keys (``db upgrade --runtime-role``) covers the new
column, so no grant changes. The downgrade refuses while unrevoked keys carry scopes: without the
column they would become unrestricted.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # Plain ADD COLUMN: nullable, no default, so no table rewrite on PostgreSQL or SQLite.
    op.add_column("api_keys", sa.Column("scopes", sa.Text(), nullable=True))


def downgrade() -> None:
    scoped = op.get_bind().execute(
        sa.text("SELECT id FROM api_keys WHERE scopes IS NOT NULL AND scopes <> '' AND revoked_at IS NULL ORDER BY id")
    )
    ids = [str(row[0]) for row in scoped]
    if ids:
        raise RuntimeError(
            f"unrevoked API keys with scopes (ids {', '.join(ids)}) would call every tool without the "
            "scopes column: revoke them ('keys revoke ID') before downgrading below 0003"
        )
    # Batch mode: SQLite rebuilds the table (api_keys has no triggers to lose).
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("scopes")
