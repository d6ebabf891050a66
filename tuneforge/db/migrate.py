"""Schema migrations (Alembic), applied at every start of the API, a worker or the CLI."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, inspect

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant: PostgreSQL's advisory lock keeps processes that start together from migrating
# at the same time. On SQLite, BEGIN IMMEDIATE does the same.
ADVISORY_LOCK = 0x7475_6E65


def migrate(engine: Engine) -> None:
    """Bring the database to the newest schema, in one transaction."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK})")
        config.attributes["connection"] = conn
        tables = set(inspect(conn).get_table_names())
        if "jobs" in tables and "alembic_version" not in tables:
            # Created by tuneforge before it had migrations: that schema is revision 0001.
            command.stamp(config, "0001")
        command.upgrade(config, "head")
