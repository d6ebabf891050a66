"""Imported base models (issue 21): where a model in the `models` table came from (the
GGUF file or folder it was imported from, its SHA-256 and quantization), null for the others.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("provenance", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("provenance")
