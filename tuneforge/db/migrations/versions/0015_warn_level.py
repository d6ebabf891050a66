"""Events at the warning level are `warn`, the level OpenAI's API and client know
(`info`, `warn`, `error`); rows written as `warning` before are renamed.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE events SET level = 'warn' WHERE level = 'warning'")


def downgrade() -> None:
    op.execute("UPDATE events SET level = 'warning' WHERE level = 'warn'")
