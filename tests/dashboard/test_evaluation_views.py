"""A classification job's page and its version's page in a real browser (Debian's Chromium,
driven by Playwright), at laptop and phone width: the per-class report and the confusion
matrix from the job's evaluation, evaluation metrics with one value as a table (not charts of
one dot), integer step axes, worse-than-base metrics marked wherever they are shown, the
change against the base as bars, and tables that scroll inside the page on a phone. Screenshots
go where test_dashboard.py puts them."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from ..conftest import DATA, Server
from .test_dashboard import DESKTOP, PHONE, browser, page, shoot  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

REGISTERED = "dash-intents"


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, ["text", "category"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def classifier(server: Server, model_id: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Four BANKING77 intents; the validation rows are mostly the training data's most
    frequent intent, so answering it always (the baseline) scores high on accuracy; a barely
    trained classifier (one step size of 1e-6) does worse on some metrics, better on others.
    One evaluation, at the end of its one epoch (step 6)."""
    with (DATA / "banking77-train.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    intents = sorted({row["category"] for row in rows})[:4]
    by_intent = {i: [r for r in rows if r["category"] == i] for i in intents}
    train = by_intent[intents[0]][:24] + [r for i in intents[1:] for r in by_intent[i][:8]]
    held = by_intent[intents[0]][24:36] + [by_intent[i][8] for i in intents[1:]]
    folder = tmp_path_factory.mktemp("intents")
    body = {
        "model": model_id, "seed": 5, "suffix": "intents", "registered_model": REGISTERED,
        "training_file": server.upload(write_rows(folder / "train.csv", train))["id"],
        "validation_file": server.upload(write_rows(folder / "held.csv", held))["id"],
        "method": {"type": "classification", "classification": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 8, "learning_rate": 1e-6, "max_seq_length": 32,
            "logging_steps": 1}}},
    }
    created = server.client.post("/v1/fine_tuning/jobs", json=body)
    assert created.status_code == 200, created.text
    job = server.wait_for(created.json()["id"], timeout=600)
    assert job["status"] == "succeeded", job["error"]
    return job | {"validation_rows": len(held)}


def expected_worse(evaluation: dict) -> set[str]:
    """The metrics on which the fine-tuned model is below the base (all of a classifier's are
    higher-is-better)."""
    tuned, base = evaluation["fine_tuned_model"], evaluation["base_model"]
    return {k for k in tuned if k in base and tuned[k] < base[k]}


def check_no_sideways_page(tab) -> None:
    """At phone width nothing is cut off: the page is no wider than the screen, and each wide
    table scrolls inside its own box."""
    tab.set_viewport_size(PHONE)
    tab.wait_for_timeout(400)
    width = tab.evaluate("() => document.documentElement.scrollWidth")
    beyond = tab.evaluate("""(edge) => [...document.querySelectorAll('body *')]
        .filter((el) => el.getBoundingClientRect().right > edge + 1)
        .filter((el) => !el.closest('.table-wrap'))
        .slice(0, 5).map((el) => el.outerHTML.slice(0, 120))""", PHONE["width"])
    assert width <= PHONE["width"], (
        f"the page is {width}px wide on a {PHONE['width']}px phone", beyond)
    wide = tab.evaluate("""() => [...document.querySelectorAll('.table-wrap')]
        .filter((box) => box.scrollWidth > box.clientWidth + 1)
        .map((box) => [getComputedStyle(box).overflowX, box.clientWidth])""")
    assert wide, "no table is wider than a phone: the check checks nothing"
    assert all(overflow == "auto" and client <= PHONE["width"] for overflow, client in wide), wide
    tab.set_viewport_size(DESKTOP)


def test_classification_job_page(server: Server, page, classifier: dict) -> None:  # noqa: F811
    job_id = classifier["id"]
    result = classifier["result"]
    page.goto(f"/#/jobs/{job_id}")
    expect(page.get_by_role("heading", name=job_id)).to_be_visible()

    # The per-class report and the confusion matrix: every cell, the counts of the job's.
    classes = page.get_by_role("region", name="Classes")
    expect(classes.locator("table.per-class tbody tr")).to_have_count(4)
    cells = classes.locator("table.confusion-matrix td.cm-cell")
    expect(cells).to_have_count(16)
    counts = [int(c) for c in cells.evaluate_all("(cells) => cells.map((c) => c.dataset.count)")]
    assert counts == [n for row in result["confusion_matrix"] for n in row]
    assert sum(counts) == classifier["validation_rows"]
    expect(classes.locator("td.cm-cell.diag")).to_have_count(4)
    first = result["per_class"][0]
    expect(classes.locator("table.per-class tbody tr").first).to_contain_text(first["label"])

    # One evaluation: its metrics are a table of values at its step, not ten charts of a dot.
    values = page.locator("table.eval-values")
    expect(values.locator("caption")).to_have_text("Evaluation at step 6")
    expect(values.locator("tbody tr").filter(has_text="f1_macro")).to_have_count(1)
    expect(page.locator("polyline.series[data-series^='eval_']")).to_have_count(0)
    # Step axes count steps: whole numbers only.
    expect(page.locator("polyline.series[data-series='loss']")).to_be_visible()
    x_ticks = page.locator("figure.chart").filter(has_text="Training loss").first.locator(
        "g.axes text.tick[text-anchor='middle']").all_text_contents()
    assert len(x_ticks) >= 2 and all(re.fullmatch(r"\d+", t) for t in x_ticks), x_ticks

    # Worse than the base: the rows marked, and the change says so; better ones are not.
    worse = expected_worse(classifier["evaluation"])
    assert worse, classifier["evaluation"]
    table = page.locator("table.eval-table")
    marked = table.locator("tbody tr.worse td:first-child").all_inner_texts()
    assert set(marked) == worse
    expect(table.locator("tbody tr.worse .change.worse")).to_have_count(len(worse))
    expect(table.locator("tbody tr.better .change.worse")).to_have_count(0)
    # The changes as bars from a middle line, one per metric, red where worse.
    expect(page.locator(".change-bars .delta-bar.worse")).to_have_count(len(worse))
    expect(page.locator("p.primary-line")).to_contain_text("f1_macro")
    # The attempt counts failures: this job ran once and never failed.
    expect(page.locator(".facts")).to_contain_text("1 of 3")
    shoot(page, "job-classification")
    check_no_sideways_page(page)


def test_version_page_marks_worse_metrics(server: Server, page, classifier: dict) -> None:  # noqa: F811
    page.goto(f"/#/models/{REGISTERED}")
    expect(page.locator("table.versions tbody tr")).to_have_count(1)
    worse = expected_worse(classifier["evaluation"])
    table = page.locator("#version-detail table.eval-table")
    expect(table.locator("tbody tr.worse")).to_have_count(len(worse))
    primary = classifier["evaluation"]["primary_metric"]
    cell = page.locator("table.versions .primary-cell")
    expect(cell).to_contain_text(primary)
    expect(cell).to_have_class(re.compile("worse" if primary in worse else "better"))
    shoot(page, "model-classification")
    check_no_sideways_page(page)


def test_cancelled_job_says_why_it_has_no_evaluation(
        server: Server, page, classifier: dict) -> None:  # noqa: F811
    created = server.client.post("/v1/fine_tuning/jobs", json={
        "model": classifier["model"], "training_file": classifier["training_file"],
        "method": {"type": "classification"}}).json()
    server.client.post(f"/v1/fine_tuning/jobs/{created['id']}/cancel")
    assert server.wait_for(created["id"], timeout=120)["status"] == "cancelled"
    page.goto(f"/#/jobs/{created['id']}")
    expect(page.get_by_role("region", name="Evaluation")).to_contain_text(
        "Not evaluated: the job was cancelled before it finished.")
