"""Issue 27: usage of served models, per minute, model and endpoint (tuneforge.monitoring.usage).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_usage",
        sa.Column("minute", sa.Float, primary_key=True),
        sa.Column("model", sa.String(255), primary_key=True),
        sa.Column("endpoint", sa.String(64), primary_key=True),
        sa.Column("registered_model", sa.String(100)),
        sa.Column("version", sa.Integer),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("latency_ms_sum", sa.Float, nullable=False),
        sa.Column("latency_ms_max", sa.Float, nullable=False),
        sa.Column("latency_buckets", sa.JSON, nullable=False),
    )
    op.create_index(
        "ix_model_usage_registered_minute", "model_usage", ["registered_model", "minute"]
    )
    op.create_index("ix_model_usage_model_minute", "model_usage", ["model", "minute"])


def downgrade() -> None:
    op.drop_index("ix_model_usage_model_minute", "model_usage")
    op.drop_index("ix_model_usage_registered_minute", "model_usage")
    op.drop_table("model_usage")
