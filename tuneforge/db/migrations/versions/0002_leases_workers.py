"""Leases with fencing tokens, retries, pause, device routing, and the workers table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("failures", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"))
        batch.add_column(
            sa.Column("pause_requested", sa.Boolean, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("device", sa.String(16), nullable=False, server_default="auto"))
        batch.add_column(sa.Column("claimed_at", sa.Float))
        batch.add_column(sa.Column("run_seconds", sa.Float, nullable=False, server_default="0"))
    op.create_table(
        "workers",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("kinds", sa.JSON),
        sa.Column("devices", sa.JSON),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("job_id", sa.String(64)),
        sa.Column("stopped_at", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("workers")
    with op.batch_alter_table("jobs") as batch:
        for column in (
            "run_seconds",
            "claimed_at",
            "device",
            "pause_requested",
            "max_attempts",
            "failures",
            "lease",
        ):
            batch.drop_column(column)
