"""`/metrics`: the service's figures in Prometheus' text format (tuneforge.monitoring.prometheus);
a read key suffices once keys exist."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from tuneforge.api.deps import SettingsDep, StoreDep, UsageMeterDep
from tuneforge.monitoring.prometheus import CONTENT_TYPE, render_metrics

router = APIRouter(tags=["system"])


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
)
def metrics(store: StoreDep, settings: SettingsDep, meter: UsageMeterDep) -> PlainTextResponse:
    """Jobs by kind and status, queue depth, job durations, served requests with their
    latency and tokens, worker heartbeats, and GPU memory where there is a GPU."""
    text = render_metrics(store, meter, settings.stalled_after_seconds)
    return PlainTextResponse(text, media_type=CONTENT_TYPE)
