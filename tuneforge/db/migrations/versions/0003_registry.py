"""The model registry: registered models, versions, aliases.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registered_models",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("tags", sa.JSON),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "name",
            sa.String(100),
            sa.ForeignKey("registered_models.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("model_id", sa.String(255), nullable=False),
        sa.Column("job_id", sa.String(64)),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("base_model", sa.String(255)),
        sa.Column("spec", sa.JSON),
        sa.Column("data_files", sa.JSON),
        sa.Column("library_versions", sa.JSON),
        sa.Column("metrics", sa.JSON),
        sa.Column("evaluation", sa.JSON),
        sa.Column("artefacts", sa.JSON),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("tags", sa.JSON),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index(
        "ux_model_versions_name_version", "model_versions", ["name", "version"], unique=True
    )
    op.create_table(
        "model_aliases",
        sa.Column(
            "name",
            sa.String(100),
            sa.ForeignKey("registered_models.name", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("alias", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("model_aliases", "model_versions", "registered_models"):
        op.drop_table(table)
