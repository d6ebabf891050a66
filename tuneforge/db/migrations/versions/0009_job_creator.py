"""Issue 22: a job records the actor that created it, so that the per-key queue bound is
counted in the job's own insert transaction (it was counted from the audit log, written
after the answer, which let concurrent creations through). Waiting jobs from before take
their actor from the audit log.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("created_by", sa.String(128)))
        batch.create_index("ix_jobs_created_by_status", ["created_by", "status"])
    op.execute(
        "UPDATE jobs SET created_by = (SELECT MIN(audit_log.actor) FROM audit_log "
        "WHERE audit_log.resource_id = jobs.id) "
        "WHERE status IN ('validating_files', 'queued')"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_created_by_status")
        batch.drop_column("created_by")
