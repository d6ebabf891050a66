"""Issue 23: a job's `metadata` pairs in their own table, so that the listing's
`metadata[key]=value` filter runs in SQL (it read every job's spec in Python). Jobs from
before take their pairs from their spec.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "job_metadata",
        sa.Column(
            "job_id",
            sa.String(64),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(512), nullable=False),
    )
    op.create_index("ix_job_metadata_key_value", "job_metadata", ["key", "value"])
    jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("spec", sa.JSON))
    connection = op.get_bind()
    pairs = []
    for job_id, spec in connection.execute(sa.select(jobs.c.id, jobs.c.spec)):
        if isinstance(spec, str):
            spec = json.loads(spec)
        metadata = (spec or {}).get("metadata") or {}
        pairs += [
            {"job_id": job_id, "key": str(k), "value": str(v)}
            for k, v in metadata.items()
            if v is not None
        ]
    if pairs:
        op.bulk_insert(table, pairs)


def downgrade() -> None:
    op.drop_index("ix_job_metadata_key_value", table_name="job_metadata")
    op.drop_table("job_metadata")
