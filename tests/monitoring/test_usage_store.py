"""The parts of usage metering that need no server: the minutes a meter counts are added to
what the database holds (SQLite and PostgreSQL), percentiles read from the histogram, the
window parameter, and the API key guard on /metrics (the real app, in-process)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tuneforge.api.app import create_app
from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.errors import InvalidRequestError
from tuneforge.monitoring.usage import (
    KEEP_SECONDS,
    LATENCY_BOUNDS_MS,
    Counts,
    ServedRequest,
    UsageMeter,
    percentile,
    usage_report,
    window_seconds,
)
from tuneforge.security.keys import create_api_key


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    db = Store(url)
    db.create_schema()
    yield db
    db.dispose()


def served(meter: UsageMeter, model: str, *, error: bool = False, prompt: int = 3) -> None:
    request = ServedRequest("/v1/embeddings", model)
    request.found()
    request.tokens(prompt=prompt)
    meter.record(request, error=error)


def test_two_meters_add_up_in_the_database(store: Store) -> None:
    """Two API processes count the same minute: each flush adds to the stored row."""
    first, second = UsageMeter(store), UsageMeter(store)
    for _ in range(3):
        served(first, "m")
    served(second, "m", error=True, prompt=5)
    first.flush()
    second.flush()
    served(first, "m")
    first.flush()
    first.flush()  # nothing new: nothing changes
    rows = store.usage_rows(models=["m"], registered=None, since=0, until=2e10)
    assert len(rows) in (1, 2)  # two when the minute turned between the requests
    total = Counts()
    for row in rows:
        total.merge(Counts.of_row(row))
    assert (total.requests, total.errors, total.prompt_tokens) == (5, 1, 17)
    assert sum(total.buckets) == 5
    assert store.usage_rows(models=["other"], registered=None, since=0, until=2e10) == []


def test_old_minutes_are_pruned(store: Store) -> None:
    meter = UsageMeter(store)
    served(meter, "m")
    meter.flush()
    [row] = store.usage_rows(models=["m"], registered=None, since=0, until=2e10)
    store.add_usage([{**row, "minute": 60.0}])  # 1970: long past any window
    assert store.prune_usage(before=row["minute"] - KEEP_SECONDS) == 1
    [kept] = store.usage_rows(models=["m"], registered=None, since=0, until=2e10)
    assert kept["minute"] == row["minute"] and kept["requests"] == 1


def test_concurrent_requests_are_all_counted(store: Store) -> None:
    meter = UsageMeter(store)
    threads = [
        threading.Thread(target=lambda: [served(meter, "m") for _ in range(50)]) for _ in range(4)
    ]
    flusher = threading.Thread(target=lambda: [meter.flush() for _ in range(20)])
    for thread in [*threads, flusher]:
        thread.start()
    for thread in [*threads, flusher]:
        thread.join()
    meter.flush()
    rows = store.usage_rows(models=["m"], registered=None, since=0, until=2e10)
    assert sum(row["requests"] for row in rows) == 200
    assert meter.totals[("/v1/embeddings", "m")].requests == 200


def test_percentiles_read_from_the_histogram() -> None:
    counts = Counts()
    for latency in [4.0] * 50 + [40.0] * 45 + [900.0] * 5:
        counts.add(latency, False, 0, 0)
    assert percentile(counts.buckets, 0.5, 900.0) == 5.0  # the top of 3-5 ms
    p95 = percentile(counts.buckets, 0.95, 900.0)
    assert 30 < p95 <= 50  # in the bucket of 40 ms
    assert 750 < percentile(counts.buckets, 0.99, 900.0) <= 900.0  # never above the slowest
    assert percentile([0] * (len(LATENCY_BOUNDS_MS) + 1), 0.5, 0.0) is None
    report = usage_report(
        [{"minute": 120.0, "model": "m", "endpoint": "/v1/embeddings", "registered_model": None,
          "version": None, "requests": 100, "errors": 0, "prompt_tokens": 0,
          "completion_tokens": 0, "latency_ms_sum": counts.latency_ms_sum,
          "latency_ms_max": 900.0, "latency_buckets": counts.buckets}],
        since=0, until=3600,
    )  # fmt: skip
    assert report["totals"]["latency_ms"]["p95"] == p95
    assert report["series"] == [{**report["series"][0], "start": 120.0, "requests": 100}]


@pytest.mark.parametrize(("text", "seconds"), [("15m", 900), ("24h", 86400), ("7d", 604800),
                                                ("90", 90), (" 2H ", 7200)])  # fmt: skip
def test_windows(text: str, seconds: int) -> None:
    assert window_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "0m", "-1", "1.5h", "1w", "91d", "soon"])
def test_bad_windows_name_the_parameter(text: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        window_seconds(text)
    assert raised.value.param == "window"


def test_metrics_take_a_read_key(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "data")
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    _, secret = create_api_key(store, "viewer", "read")
    store.dispose()
    with TestClient(create_app(settings, run_worker=False), base_url="http://127.0.0.1") as c:
        refused = c.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "missing_api_key"
        r = c.get("/metrics", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 200 and "tuneforge_queue_depth 0\n" in r.text
        assert (
            c.get("/v1/statistics", headers={"Authorization": f"Bearer {secret}"}).json()["totals"][
                "total"
            ]
            == 0
        )
