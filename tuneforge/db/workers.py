"""Workers, and the machines of a multi-machine job's run (its rendezvous, `job_nodes`)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from tuneforge.db import tables as t
from tuneforge.db.engine import Database, every
from tuneforge.db.jobs import check_lease, write_event
from tuneforge.db.records import JobNode, RendezvousOpening, Row, Worker
from tuneforge.jobs.status import JobStatus


class WorkerStore(Database):
    """The `workers` and `job_nodes` tables."""

    def register_worker(self, row: Row) -> None:
        now = time.time()
        with self._tx() as conn:
            conn.execute(t.workers.delete().where(t.workers.c.id == row["id"]))
            conn.execute(t.workers.insert().values(started_at=now, heartbeat_at=now, **row))

    def worker_alive(self, worker_id: str, job_id: str | None) -> None:
        with self._tx() as conn:
            conn.execute(
                t.workers.update()
                .where(t.workers.c.id == worker_id)
                .values(heartbeat_at=time.time(), job_id=job_id)
            )

    def worker_stopped(self, worker_id: str) -> None:
        with self._tx() as conn:
            conn.execute(
                t.workers.update()
                .where(t.workers.c.id == worker_id)
                .values(stopped_at=time.time(), job_id=None)
            )

    def list_workers(self) -> list[Worker]:
        with self._tx() as conn:
            rows = conn.execute(select(t.workers).order_by(t.workers.c.started_at.desc())).all()
        return every(Worker, rows)

    # -- the machines of a multi-machine job -----------------------------------------------

    def open_rendezvous(self, job_id: str, lease: int, node: Row) -> None:
        """Node 0 of a run: the worker holding `lease` waits here for the other machines
        (`node` has machines, worker_id, hostname, address, port, token)."""
        now = time.time()
        with self._tx() as conn:
            check_lease(conn, job_id, lease)
            conn.execute(
                t.job_nodes.insert().values(
                    job_id=job_id,
                    lease=lease,
                    node_rank=0,
                    state="joined",
                    joined_at=now,
                    heartbeat_at=now,
                    **node,
                )
            )

    def rendezvous_openings(self) -> list[RendezvousOpening]:
        """Node 0 of every running multi-machine run that still misses machines, oldest job
        first, with the job's kind, device, spec and creation time."""
        nodes = t.job_nodes
        others = nodes.alias("others")
        joined = (
            select(func.count())
            .where(others.c.job_id == nodes.c.job_id, others.c.lease == nodes.c.lease)
            .scalar_subquery()
        )
        query = (
            select(
                nodes,
                t.jobs.c.kind,
                t.jobs.c.device,
                t.jobs.c.spec,
                t.jobs.c.created_at,
                joined.label("joined"),
            )
            .join(t.jobs, t.jobs.c.id == nodes.c.job_id)
            .where(
                nodes.c.node_rank == 0,
                t.jobs.c.status == JobStatus.RUNNING.value,
                t.jobs.c.lease == nodes.c.lease,
                joined < nodes.c.machines,
            )
            .order_by(t.jobs.c.created_at, t.jobs.c.id)
        )
        with self._tx() as conn:
            return every(RendezvousOpening, conn.execute(query).all())

    def join_rendezvous(
        self, job_id: str, lease: int, worker_id: str, hostname: str
    ) -> JobNode | None:
        """Take the next node rank of a run that still misses machines; None if it is full,
        no longer running under `lease`, or another worker took that rank at the same
        moment."""
        now = time.time()
        try:
            with self._tx() as conn:
                job = conn.execute(
                    select(t.jobs.c.status, t.jobs.c.lease).where(t.jobs.c.id == job_id)
                ).first()
                if job is None or job.status != JobStatus.RUNNING.value or job.lease != lease:
                    return None
                nodes = conn.execute(
                    select(t.job_nodes)
                    .where(t.job_nodes.c.job_id == job_id, t.job_nodes.c.lease == lease)
                    .order_by(t.job_nodes.c.node_rank)
                ).all()
                if not nodes or len(nodes) >= nodes[0].machines:
                    return None
                node = JobNode(
                    job_id=job_id,
                    lease=lease,
                    node_rank=len(nodes),
                    machines=nodes[0].machines,
                    worker_id=worker_id,
                    hostname=hostname,
                    address=None,
                    port=None,
                    token=None,
                    state="joined",
                    joined_at=now,
                    heartbeat_at=now,
                    exit_code=None,
                )
                conn.execute(t.job_nodes.insert().values(**node))
                write_event(
                    conn,
                    job_id,
                    f"Machine {node.node_rank} ({hostname}, worker {worker_id}) joined; "
                    f"{len(nodes) + 1} of {node.machines} machines are in.",
                    data={"node_rank": node.node_rank, "worker_id": worker_id},
                )
        except IntegrityError:
            return None  # that rank went to another worker
        return node

    def rendezvous_nodes(self, job_id: str, lease: int) -> list[JobNode]:
        with self._tx() as conn:
            rows = conn.execute(
                select(t.job_nodes)
                .where(t.job_nodes.c.job_id == job_id, t.job_nodes.c.lease == lease)
                .order_by(t.job_nodes.c.node_rank)
            ).all()
        return every(JobNode, rows)

    def update_node(self, job_id: str, lease: int, node_rank: int, **fields: Any) -> None:
        """Set a node's state or exit code; always renews its heartbeat."""
        with self._tx() as conn:
            conn.execute(
                t.job_nodes.update()
                .where(
                    t.job_nodes.c.job_id == job_id,
                    t.job_nodes.c.lease == lease,
                    t.job_nodes.c.node_rank == node_rank,
                )
                .values(heartbeat_at=time.time(), **fields)
            )
