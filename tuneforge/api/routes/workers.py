"""`/v1/workers`: the workers sharing this database, their limits and current jobs."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from tuneforge.api.deps import SettingsDep, StoreDep

router = APIRouter(prefix="/v1/workers", tags=["system"])


@router.get("")
def list_workers(store: StoreDep, settings: SettingsDep) -> dict[str, Any]:
    """Workers seen by the database, newest first; `alive` while their heartbeat is fresh."""
    now = time.time()
    data = [
        {
            "id": w["id"],
            "object": "worker",
            "hostname": w["hostname"],
            "pid": w["pid"],
            "kinds": w["kinds"],
            "devices": w["devices"],
            "started_at": int(w["started_at"]),
            "heartbeat_at": int(w["heartbeat_at"]),
            "job_id": w["job_id"],
            "alive": w["stopped_at"] is None
            and now - w["heartbeat_at"] < settings.stalled_after_seconds,
        }
        for w in store.list_workers()
    ]
    return {"object": "list", "data": data, "queued": store.count_jobs().get("queued", 0)}
