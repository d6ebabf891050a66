"""Multi-machine jobs (issue 12): the machines taking part in one run of a job. The worker
that claims the job opens the run's rendezvous (node 0, with its address and port); workers
on other machines join it as nodes 1..N-1.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_nodes",
        sa.Column(
            "job_id",
            sa.String(64),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("lease", sa.Integer, primary_key=True),
        sa.Column("node_rank", sa.Integer, primary_key=True),
        sa.Column("machines", sa.Integer, nullable=False),
        sa.Column("worker_id", sa.String(128), nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("address", sa.String(255)),
        sa.Column("port", sa.Integer),
        sa.Column("token", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("joined_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
        sa.Column("exit_code", sa.Integer),
    )


def downgrade() -> None:
    op.drop_table("job_nodes")
