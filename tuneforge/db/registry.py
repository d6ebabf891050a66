"""Models the API serves, and the registry: registered models, their versions 1..N, and
aliases pointing at one version each (tuneforge.registry)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from tuneforge.db import tables as t
from tuneforge.db.engine import Database, every, one
from tuneforge.db.records import Model, ModelAlias, ModelVersion, RegisteredModel, Row
from tuneforge.errors import InvalidStateError, ModelNotFoundError


class RegistryStore(Database):
    """The `models`, `registered_models`, `model_versions` and `model_aliases` tables."""

    # -- models ------------------------------------------------------------------------------

    def upsert_model(self, row: Row, *, conn: Connection | None = None) -> None:
        """Insert or replace a model row (inside `conn`'s transaction when given)."""
        if conn is None:
            with self._tx() as conn:
                self.upsert_model(row, conn=conn)
            return
        # One statement: two jobs created at once on a new base model both insert it, and on
        # PostgreSQL a read-then-insert lets both through to a unique violation (a 500).
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(t.models).values(**row)
        changed = {k: insert.excluded[k] for k in row if k != "id"}
        conn.execute(insert.on_conflict_do_update(index_elements=[t.models.c.id], set_=changed))

    def get_model(self, model_id: str, *, conn: Connection | None = None) -> Model | None:
        """The model row `model_id` (read inside `conn`'s transaction when given)."""
        query = select(t.models).where(t.models.c.id == model_id)
        if conn is not None:
            return one(Model, conn.execute(query).first())
        with self._tx() as own:
            return one(Model, own.execute(query).first())

    def list_models(self) -> list[Model]:
        with self._tx() as conn:
            rows = conn.execute(select(t.models).order_by(t.models.c.created_at)).all()
        return every(Model, rows)

    def delete_model(self, model_id: str, *, conn: Connection | None = None) -> None:
        if conn is None:
            with self._tx() as conn:
                self.delete_model(model_id, conn=conn)
            return
        conn.execute(t.models.delete().where(t.models.c.id == model_id))

    # -- registered models and their versions ----------------------------------------------

    def add_model_version(self, row: Row, *, conn: Connection) -> int:
        """Add the next version (1..N) of the registered model `row["name"]`, creating the
        registered model on its first version; returns the version number. Runs inside the
        caller's transaction (the job's fenced publish)."""
        now = time.time()
        name = row["name"]
        exists = conn.execute(
            select(t.registered_models.c.name).where(t.registered_models.c.name == name)
        ).first()
        if exists is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        t.registered_models.insert().values(
                            name=name,
                            kind=row["kind"],
                            description=None,
                            tags=[],
                            created_at=now,
                            updated_at=now,
                        )
                    )
            except IntegrityError:
                pass  # created by a concurrent publish
        lock = select(t.registered_models.c.name).where(t.registered_models.c.name == name)
        if not self.is_sqlite:
            lock = lock.with_for_update()  # versions of one name are numbered one at a time
        conn.execute(lock)
        latest = conn.execute(
            select(func.max(t.model_versions.c.version)).where(t.model_versions.c.name == name)
        ).scalar()
        version = (latest or 0) + 1
        conn.execute(t.model_versions.insert().values(version=version, created_at=now, **row))
        conn.execute(
            t.registered_models.update()
            .where(t.registered_models.c.name == name)
            .values(updated_at=now)
        )
        return version

    def get_registered_model(self, name: str) -> RegisteredModel | None:
        with self._tx() as conn:
            found = conn.execute(
                select(t.registered_models).where(t.registered_models.c.name == name)
            ).first()
        return one(RegisteredModel, found)

    def list_registered_models(self) -> list[RegisteredModel]:
        with self._tx() as conn:
            rows = conn.execute(
                select(t.registered_models).order_by(t.registered_models.c.updated_at.desc())
            ).all()
        return every(RegisteredModel, rows)

    def update_registered_model(self, name: str, **fields: Any) -> None:
        with self._tx() as conn:
            conn.execute(
                t.registered_models.update()
                .where(t.registered_models.c.name == name)
                .values(updated_at=time.time(), **fields)
            )

    def list_versions(self, name: str | None = None) -> list[ModelVersion]:
        """Versions of one registered model (or of all), newest first."""
        query = select(t.model_versions)
        if name is not None:
            query = query.where(t.model_versions.c.name == name)
        with self._tx() as conn:
            rows = conn.execute(
                query.order_by(t.model_versions.c.name, t.model_versions.c.version.desc())
            ).all()
        return every(ModelVersion, rows)

    def get_version(self, name: str, version: int) -> ModelVersion | None:
        with self._tx() as conn:
            found = conn.execute(
                select(t.model_versions).where(
                    t.model_versions.c.name == name, t.model_versions.c.version == version
                )
            ).first()
        return one(ModelVersion, found)

    def version_of_model(self, model_id: str) -> ModelVersion | None:
        """The registry version a fine-tuned model id (ft:...) is."""
        with self._tx() as conn:
            found = conn.execute(
                select(t.model_versions).where(t.model_versions.c.model_id == model_id)
            ).first()
        return one(ModelVersion, found)

    def update_version(self, name: str, version: int, **fields: Any) -> None:
        with self._tx() as conn:
            conn.execute(
                t.model_versions.update()
                .where(t.model_versions.c.name == name, t.model_versions.c.version == version)
                .values(**fields)
            )

    def delete_version(self, name: str, version: int) -> ModelVersion:
        """Remove a version and its model row; refused (InvalidStateError) while an alias
        points at it. Returns the removed row (its files are the caller's to remove)."""
        with self._tx() as conn:
            row = one(
                ModelVersion,
                conn.execute(
                    select(t.model_versions).where(
                        t.model_versions.c.name == name, t.model_versions.c.version == version
                    )
                ).first(),
            )
            if row is None:
                raise ModelNotFoundError(f"{name} has no version {version}.", param="version")
            aliases = (
                conn.execute(
                    select(t.model_aliases.c.alias).where(
                        t.model_aliases.c.name == name, t.model_aliases.c.version == version
                    )
                )
                .scalars()
                .all()
            )
            if aliases:
                raise InvalidStateError(
                    f"Version {version} of {name} is what alias(es) {', '.join(aliases)} "
                    "point at; move or delete the alias first.",
                    param="version",
                )
            conn.execute(t.model_versions.delete().where(t.model_versions.c.id == row.id))
            conn.execute(t.models.delete().where(t.models.c.id == row.model_id))
        return row

    # -- aliases -----------------------------------------------------------------------------

    def set_alias(
        self, name: str, alias: str, version: int, *, conn: Connection | None = None
    ) -> None:
        """Point `alias` of `name` at `version` (which must exist)."""
        if conn is None:
            with self._tx() as conn:
                self.set_alias(name, alias, version, conn=conn)
            return
        exists = conn.execute(
            select(t.model_versions.c.id).where(
                t.model_versions.c.name == name, t.model_versions.c.version == version
            )
        ).first()
        if exists is None:
            raise ModelNotFoundError(f"{name} has no version {version}.", param="version")
        values = {"version": version, "updated_at": time.time()}
        updated = conn.execute(
            t.model_aliases.update()
            .where(t.model_aliases.c.name == name, t.model_aliases.c.alias == alias)
            .values(**values)
        ).rowcount
        if not updated:
            conn.execute(t.model_aliases.insert().values(name=name, alias=alias, **values))

    def delete_alias(self, name: str, alias: str) -> bool:
        with self._tx() as conn:
            return (
                conn.execute(
                    t.model_aliases.delete().where(
                        t.model_aliases.c.name == name, t.model_aliases.c.alias == alias
                    )
                ).rowcount
                == 1
            )

    def aliases(self, name: str | None = None) -> list[ModelAlias]:
        query = select(t.model_aliases)
        if name is not None:
            query = query.where(t.model_aliases.c.name == name)
        with self._tx() as conn:
            rows = conn.execute(query.order_by(t.model_aliases.c.alias)).all()
        return every(ModelAlias, rows)

    def alias_version(self, name: str, alias: str, *, conn: Connection | None = None) -> int | None:
        query = select(t.model_aliases.c.version).where(
            t.model_aliases.c.name == name, t.model_aliases.c.alias == alias
        )
        if conn is not None:
            return conn.execute(query).scalar()
        with self._tx() as own:
            return own.execute(query).scalar()
