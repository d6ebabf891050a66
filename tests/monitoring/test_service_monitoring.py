"""Watching the service through a real server: usage of a served model (all-MiniLM-L6-v2,
and a registered version), /metrics in Prometheus' text format, /v1/statistics against the
jobs made, the resource samples of a tiny embedding job, and the dashboard's panels in a real
browser. One server, one tiny job and one round of requests are shared by the module's
tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.offline_models import MINILM
from tests.server import TEST_ENV, Server
from tests.tiny_llm import QWEN, install_in_hf_cache

pytestmark = pytest.mark.slow

REGISTERED = "mon-sts"

TEXTS = [
    "A man is playing a guitar.",
    "Ein Mann spielt Gitarre.",
    "The cat sleeps on the warm window sill.",
    "Two dogs run across a green field.",
]

# The text format, line by line (Prometheus' exposition format 0.0.4): comments, or a name,
# optional labels and a number.
HELP_OR_TYPE = re.compile(r"# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)")
SAMPLE = re.compile(
    r"([a-zA-Z_:][a-zA-Z0-9_:]*)"
    r'(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*",?)*)\})?'
    r" (-?[0-9.e+-]+|[+-]Inf|NaN)"
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\["\\n])*)"')


def parse_exposition(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition by (name, labels); AssertionError on any line that is
    not of the format, or on a sample of a family without a TYPE line before it."""
    assert text.endswith("\n")
    typed: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        comment = HELP_OR_TYPE.fullmatch(line)
        if comment:
            if comment.group(1) == "TYPE":
                assert comment.group(3) in ("counter", "gauge", "histogram"), line
                typed[comment.group(2)] = comment.group(3)
            continue
        match = SAMPLE.fullmatch(line)
        assert match, f"not a sample line: {line!r}"
        name, labels, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or typed.get(family) == "histogram", f"untyped: {line!r}"
        key = (name, frozenset(LABEL.findall(labels or "")))
        assert key not in samples, f"twice: {line!r}"
        samples[key] = float(value)
    return samples


def sample(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, offline_hub: Path) -> Iterator[Server]:
    """The module's server; job processes sample their resources every second."""
    env = {**TEST_ENV, "TUNEFORGE_RESOURCE_SAMPLE_SECONDS": "1"}
    srv = Server(tmp_path_factory.mktemp("server") / "tuneforge-data", env=env)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def served(server: Server) -> dict:
    """Eight embedding requests, one that fails once its model is found (too many
    dimensions), one naming no model: their prompt tokens and slowest latency (ms)."""
    tokens, slowest = 0, 0.0
    for i in range(8):
        started = time.monotonic()
        body = {"model": MINILM, "input": TEXTS[: i % 4 + 1]}
        # The first loads the model: on a busy machine that can take over a minute.
        r = server.client.post("/v1/embeddings", json=body, timeout=300)
        slowest = max(slowest, (time.monotonic() - started) * 1000)
        assert r.status_code == 200, r.text
        tokens += r.json()["usage"]["prompt_tokens"]
    body = {"model": MINILM, "input": "x", "dimensions": 4096}
    r = server.client.post("/v1/embeddings", json=body)
    assert r.status_code == 400
    r = server.client.post("/v1/embeddings", json={"model": "no-such/model", "input": "x"})
    assert r.status_code == 404
    return {"tokens": tokens, "slowest_ms": slowest}


@pytest.fixture(scope="module")
def jobs(server: Server, stsb_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny embedding job that succeeds (48 pairs, 3 steps), and one cancelled while it
    waits behind it."""
    path = tmp_path_factory.mktemp("monitoring") / "sts-48.csv"
    path.write_bytes(b"\n".join(stsb_slice.read_bytes().split(b"\n")[:48]) + b"\n")
    file_id = server.upload(path)["id"]
    body = {
        "model": MINILM,
        "training_file": file_id,
        "registered_model": REGISTERED,
        "method": {"type": "embedding", "embedding": {
            "loss": "cosent", "hyperparameters": {"n_epochs": 1, "batch_size": 16}}},
    }  # fmt: skip
    first = server.client.post("/v1/fine_tuning/jobs", json=body).json()
    second = server.client.post("/v1/fine_tuning/jobs", json=body).json()
    cancelled = server.client.post(f"/v1/fine_tuning/jobs/{second['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    done = server.wait_for(first["id"], timeout=240)
    assert done["status"] == "succeeded", done["error"]
    return {"succeeded": done, "cancelled": server.wait_for(second["id"])}


def test_usage_counts_requests_tokens_errors_and_percentiles(server: Server, served: dict) -> None:
    r = server.client.get(f"/v1/models/{MINILM}/usage", params={"window": "1h"})
    assert r.status_code == 200, r.text
    usage = r.json()
    totals = usage["totals"]
    assert (totals["requests"], totals["errors"]) == (9, 1)
    assert totals["error_rate"] == pytest.approx(1 / 9, abs=1e-6)
    assert totals["prompt_tokens"] == served["tokens"] and totals["completion_tokens"] == 0
    latency = totals["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    # Measured inside the server: never slower than the client saw the slowest request.
    assert latency["max"] <= served["slowest_ms"]
    [entry] = usage["data"]
    assert (entry["model"], entry["endpoint"], entry["version"]) == (MINILM, "/v1/embeddings", None)
    assert sum(point["requests"] for point in usage["series"]) == 9
    assert usage["step_seconds"] == 60

    bad = server.client.get(f"/v1/models/{MINILM}/usage", params={"window": "soon"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "window"
    unknown = server.client.get("/v1/models/ft:nothing:here:0/usage")
    assert unknown.status_code == 404


def test_streamed_and_whole_answers_count_their_tokens(server: Server, offline_hub: Path) -> None:
    """A streamed chat answer is counted when its stream ends, with the tokens its usage
    chunk reports; a completion of two answers with the tokens of its usage."""
    install_in_hf_cache(offline_hub, QWEN)
    ask = [{"role": "user", "content": "Hashtags for coffee"}]
    body = {"model": QWEN, "messages": ask, "max_tokens": 6, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    with server.client.stream("POST", "/v1/chat/completions", json=body, timeout=300) as r:
        assert r.status_code == 200
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line]
    assert events[-1] == "[DONE]"
    streamed = json.loads(events[-2])["usage"]
    body = {"model": QWEN, "prompt": "Write a short post", "max_tokens": 5, "n": 2}
    r = server.client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    whole = r.json()["usage"]

    usage = server.client.get(f"/v1/models/{QWEN}/usage").json()
    by_endpoint = {entry["endpoint"]: entry for entry in usage["data"]}
    chat, completions = by_endpoint["/v1/chat/completions"], by_endpoint["/v1/completions"]
    assert (chat["requests"], completions["requests"]) == (1, 1)
    assert (chat["prompt_tokens"], chat["completion_tokens"]) == (
        streamed["prompt_tokens"], streamed["completion_tokens"])  # fmt: skip
    assert (completions["prompt_tokens"], completions["completion_tokens"]) == (
        whole["prompt_tokens"], whole["completion_tokens"])  # fmt: skip
    assert chat["errors"] == completions["errors"] == 0


def test_metrics_parse_with_the_counts(server: Server, served: dict, jobs: dict) -> None:
    r = server.client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = parse_exposition(r.text)
    labels = {"endpoint": "/v1/embeddings", "model": MINILM}
    assert sample(samples, "tuneforge_serving_requests_total", **labels, outcome="success") == 8
    assert sample(samples, "tuneforge_serving_requests_total", **labels, outcome="error") == 1
    name = "tuneforge_serving_request_duration_seconds"
    assert sample(samples, f"{name}_count", **labels) == 9
    assert sample(samples, f"{name}_bucket", **labels, le="+Inf") == 9
    assert 0 < sample(samples, f"{name}_sum", **labels) < 9 * served["slowest_ms"] / 1000
    prompt = sample(samples, "tuneforge_serving_tokens_total", **labels, type="prompt")
    assert prompt == served["tokens"]
    unknown = sample(samples, "tuneforge_serving_unknown_model_requests_total",
                     endpoint="/v1/embeddings")  # fmt: skip
    assert unknown == 1

    assert sample(samples, "tuneforge_jobs", kind="embedding", status="succeeded") == 1
    assert sample(samples, "tuneforge_jobs", kind="embedding", status="cancelled") == 1
    assert sample(samples, "tuneforge_queue_depth") == 0
    name = "tuneforge_job_duration_seconds"
    assert sample(samples, f"{name}_count", kind="embedding") == 1
    buckets = sorted(
        (float(dict(key[1])["le"]), value)
        for key, value in samples.items()
        if key[0] == f"{name}_bucket"
    )
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)  # cumulative
    ages = [v for key, v in samples.items() if key[0] == "tuneforge_worker_heartbeat_age_seconds"]
    assert len(ages) == 1 and 0 <= ages[0] < 30


def test_statistics_match_the_jobs_made(server: Server, jobs: dict) -> None:
    r = server.client.get("/v1/statistics")
    assert r.status_code == 200, r.text
    stats = r.json()
    embedding = stats["by_kind"]["embedding"]
    assert embedding["total"] == 2 == stats["totals"]["total"]
    assert embedding["by_status"] == {"cancelled": 1, "succeeded": 1}
    assert embedding["success_rate"] == 1.0  # a cancelled job is not a failure
    done = jobs["succeeded"]
    # The job object's times are whole seconds.
    lifetime = done["finished_at"] - done["created_at"] + 1
    duration = embedding["duration_seconds"]
    assert duration["count"] == 1
    assert 0 < duration["mean"] == duration["p95"] <= lifetime
    wait = embedding["queue_wait_seconds"]
    assert wait["count"] == 1 and 0 <= wait["p95"] < lifetime - duration["mean"] + 1
    recent = server.client.get("/v1/statistics", params={"window": "1d"}).json()
    assert recent["totals"]["total"] == 2
    assert server.client.get("/v1/statistics", params={"window": "-1"}).status_code == 400


def test_a_job_records_its_resources(server: Server, jobs: dict) -> None:
    job_id = jobs["succeeded"]["id"]
    params = {"type": "metrics", "limit": 1000}
    events = server.client.get(f"/v1/fine_tuning/jobs/{job_id}/events", params=params).json()
    events = events["data"][::-1]
    samples = [e["data"] for e in events if "rss_bytes" in e["data"]]
    # One at the start, one when training ended, and one a second in between.
    assert len(samples) >= 3, samples
    for values in samples:
        assert values["rss_bytes"] > 50 * 2**20  # torch and a model are loaded
        assert values["peak_rss_bytes"] >= values["rss_bytes"]
        assert values["cpu_percent"] >= 0 and 0 <= values["system_memory_percent"] <= 100
    assert [s["elapsed_seconds"] for s in samples] == sorted(s["elapsed_seconds"] for s in samples)
    assert max(s["cpu_percent"] for s in samples) > 10  # it trained
    assert samples[-1]["step"] == jobs["succeeded"]["progress"]["total_steps"]
    # The training's own metrics events are still there, with their loss.
    assert any("loss" in e["data"] for e in events)


@pytest.fixture
def page(server: Server) -> Iterator[object]:
    """A tab of Debian's headless Chromium on the dashboard (as tests/dashboard); the test
    fails on any script error in the page."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = os.environ.get("TUNEFORGE_CHROMIUM") or shutil.which("chromium")
    if not chromium:
        pytest.fail("Chromium is not installed: `make test` installs it (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        tab = browser.new_page(base_url=server.url, viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        yield tab
        browser.close()
    assert errors == [], errors


def test_dashboard_panels(server: Server, jobs: dict, page) -> None:
    """The model page's usage (of a registered version, asked for by `NAME@v1`), the job
    page's resource charts and the system page's training statistics."""
    from playwright.sync_api import expect

    for text in TEXTS[:3]:
        body = {"model": f"{REGISTERED}@v1", "input": text}
        assert server.client.post("/v1/embeddings", json=body).status_code == 200
    usage = server.client.get(f"/v1/models/{REGISTERED}/usage").json()
    [entry] = usage["data"]
    assert (entry["registered_model"], entry["version"], entry["requests"]) == (REGISTERED, 1, 3)
    assert entry["model"] == jobs["succeeded"]["fine_tuned_model"]

    page.goto(f"/#/models/{REGISTERED}")
    rows = page.locator("#model-usage table.usage tbody tr")
    expect(rows).to_have_count(2)  # v1 on /v1/embeddings, and all
    expect(rows.first.locator("td").nth(1)).to_have_text("3")
    # The requests so far fell in one or two minutes: one point shows as its value, two as
    # a curve.
    expect(page.locator("polyline.series[data-series='requests'], "
                        ".single-value [data-series='requests']")).to_have_count(1)

    page.goto(f"/#/jobs/{jobs['succeeded']['id']}")
    charts = page.locator("#resource-charts")
    expect(charts.locator("polyline.series[data-series='rss']")).to_have_count(1)
    expect(charts.locator("polyline.series[data-series='cpu']")).to_have_count(1)
    # The 3-step job logged its loss once or more: a value, or a curve.
    expect(page.locator("polyline.series[data-series='loss'], "
                        ".single-value [data-series='loss']")).to_have_count(1)

    page.goto("/#/system")
    statistics = page.locator("#statistics table.statistics tbody tr")
    expect(statistics.first).to_contain_text("embedding")
    expect(statistics.first.locator("td").nth(1)).to_have_text("2")
    expect(statistics.first.locator("td").nth(3)).to_have_text("100%")
