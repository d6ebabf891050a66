"""Feedback on model outputs (issue 11).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("registered_model", sa.String(100)),
        sa.Column("messages", sa.JSON, nullable=False),
        sa.Column("output", sa.Text, nullable=False),
        sa.Column("rating", sa.String(16), nullable=False),
        sa.Column("corrected", sa.Text),
        sa.Column("metadata", sa.JSON),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_feedback_registered_created", "feedback", ["registered_model", "created_at"]
    )
    op.create_index("ix_feedback_model_created", "feedback", ["model", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_feedback_model_created", "feedback")
    op.drop_index("ix_feedback_registered_created", "feedback")
    op.drop_table("feedback")
