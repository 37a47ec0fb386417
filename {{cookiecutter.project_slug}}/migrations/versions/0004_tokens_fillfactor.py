"""tokens: fillfactor 50 (PostgreSQL), so a key rotation's UPDATE of every row is HOT

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

A key rotation rewrites ciphertext, nonce and key_id of every row in one UPDATE
(``mcp_auth.db.reencryption``). None of those columns is indexed, so with room left on the page
PostgreSQL writes each new row version next to the old one (a HOT update): no index entries, no
new pages. Half of each page is kept free for that; the table takes twice the space (a few MB
per 100k tokens), and lookups go through the unique index as before. Measured, 100k rows: the
UPDATE took 0.15-0.35 s instead of 0.8-1.3 s.

``SET (fillfactor)`` is a catalog change: no rewrite, and existing pages keep what they hold. The
first rotation after this migration moves the rows to new, half-filled pages (not HOT); every
later one is HOT. Nothing to do on SQLite.
"""

from __future__ import annotations

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE tokens SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE tokens RESET (fillfactor)")
