"""The dashboard in a real browser (Debian's headless Chromium, driven by Playwright) against
the real server: upload, the create form, live curves, pause/resume/cancel, model versions
with their evaluation, aliases, and the system page. One server and one long job are shared
by the module's tests, which run in order. Screenshots of every page, at laptop and phone
width, are written to tests/artifacts/screenshots (or $TUNEFORGE_SCREENSHOTS) for review."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import Server

pytestmark = pytest.mark.slow

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

SHOTS = Path(os.environ.get("TUNEFORGE_SCREENSHOTS")
             or Path(__file__).resolve().parents[1] / "artifacts" / "screenshots")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
REGISTERED = "dash-sts"


def chromium_path() -> str:
    path = os.environ.get("TUNEFORGE_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail("Chromium is not installed: `make test` installs it (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium_path(), headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server: Server) -> Iterator[object]:
    """A fresh tab on the dashboard; the test fails on any script error in the page."""
    context = browser.new_context(viewport=DESKTOP, base_url=server.url)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("dialog", lambda dialog: dialog.accept())
    yield tab
    context.close()
    assert errors == [], errors


@pytest.fixture(scope="module")
def state() -> dict:
    """What one test leaves for the next (the job created from the form)."""
    return {}


def shoot(tab, name: str) -> None:
    """Screenshots of the page as it is, at laptop and at phone width."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    tab.wait_for_timeout(300)  # charts redraw on the next frame after a resize
    tab.screenshot(path=str(SHOTS / f"{name}-desktop.png"), full_page=True)
    tab.set_viewport_size(PHONE)
    tab.wait_for_timeout(400)
    tab.screenshot(path=str(SHOTS / f"{name}-phone.png"), full_page=True)
    tab.set_viewport_size(DESKTOP)
    tab.wait_for_timeout(200)


def points(tab) -> int:
    """Points of the training-loss curve as drawn."""
    line = tab.locator("polyline.series[data-series='loss']")
    if not line.count():
        return 0
    return len(line.get_attribute("points").split())


def job_status(server: Server, job_id: str) -> dict:
    return server.client.get(f"/v1/fine_tuning/jobs/{job_id}").json()


@pytest.fixture(scope="module")
def sts_rows(stsb_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160 scored pairs: enough steps to watch, pause and resume (the job never ends alone)."""
    path = tmp_path_factory.mktemp("dash") / "sts-160.csv"
    path.write_bytes(b"\n".join(stsb_slice.read_bytes().split(b"\n")[:160]) + b"\n")
    return path


def test_upload_names_every_problem_with_its_line(server: Server, page, sts_rows: Path) -> None:
    page.goto("/#/datasets")
    expect(page.get_by_role("heading", name="Datasets", exact=True)).to_be_visible()
    # Dropped onto the drop zone, as a file dragged from the desktop is.
    dropped = page.evaluate_handle("""() => {
        const data = new DataTransfer();
        data.items.add(new File(
            ["A man is singing.,A man sings.,4.5\\nonly one column here\\n"
             + "A cat sleeps.,A dog runs.,0.5\\nA b.,C d.,not a score\\n"],
            "broken.csv", {type: "text/csv"}));
        return data;
    }""")
    page.dispatch_event("#dropzone", "drop", {"dataTransfer": dropped})
    page.wait_for_url(re.compile(r"#/datasets/file-"))
    problems = page.locator("table.problems tbody tr")
    expect(problems).to_have_count(2)
    expect(problems.nth(0).locator("td").first).to_have_text("2")
    expect(problems.nth(0)).to_contain_text("wrong_column_count")
    expect(problems.nth(0)).to_contain_text("Expected 3 columns, found 1.")
    expect(problems.nth(1).locator("td").first).to_have_text("4")
    expect(problems.nth(1)).to_contain_text("score")
    # The preview shows the rows read, with their lines; the bad line 4 is marked.
    preview = page.locator("table.preview tbody tr")
    expect(preview.first.locator("td").first).to_have_text("1")
    expect(page.locator("table.preview tr.has-problem")).to_have_count(1)
    file_id = page.url.rsplit("/", 1)[1]
    report = server.client.get(f"/v1/datasets/{file_id}").json()
    assert report["problem_count"] == 2 and {p["line"] for p in report["problems"]} == {2, 4}
    shoot(page, "dataset-with-problems")

    # A valid file through the file chooser: statistics as charts, rows previewed.
    page.goto("/#/datasets")
    page.set_input_files("#file-input", str(sts_rows))
    page.wait_for_url(re.compile(r"#/datasets/file-"))
    expect(page.get_by_text("No problems: the file can be trained on.")).to_be_visible()
    histogram = page.locator(".column-stats").filter(has_text="sentence1").locator("rect.bar")
    expect(histogram.first).to_be_visible()
    rows = server.client.get(f"/v1/datasets/{page.url.rsplit('/', 1)[1]}").json()
    counted = sum(int(bar.get_attribute("data-count")) for bar in histogram.all())
    assert counted == rows["statistics"]["rows"] == 160
    expect(page.locator("table.preview tbody tr")).to_have_count(20)
    page.get_by_role("button", name="Show more rows").click()
    expect(page.locator("table.preview tbody tr")).to_have_count(40)
    shoot(page, "dataset-valid")
    page.goto("/#/datasets")
    expect(page.locator("table tbody tr")).to_have_count(2)
    shoot(page, "datasets")


def test_create_a_job_from_the_form(server: Server, page, model_id: str, state: dict) -> None:
    before = server.client.get("/v1/fine_tuning/jobs").json()["data"]
    page.goto("/#/jobs/new?kind=embedding")
    # The form is built from /openapi.json, which the server builds on its first request.
    expect(page.locator("#f-training_file")).not_to_have_value("", timeout=30_000)
    # The spec's defaults and help text are in the form.
    batch = page.locator("#f-method-embedding-hyperparameters-batch_size")
    expect(batch).to_have_value("32")
    expect(page.locator("#f-method-embedding-hyperparameters-batch_size-help")).to_contain_text(
        "Examples per step")
    page.fill("#f-model", model_id)
    batch.fill("0")
    page.locator("#f-suffix").press("Enter")  # Enter submits the form
    # The API's 422 lands at the field it names; nothing was created.
    expect(batch).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-method-embedding-hyperparameters-batch_size-error")).to_contain_text(
        "greater than or equal to 1")
    assert server.client.get("/v1/fine_tuning/jobs").json()["data"] == before
    shoot(page, "job-form-error")

    page.select_option("#f-method-embedding-loss", "cosent")
    batch.fill("8")
    page.fill("#f-method-embedding-hyperparameters-n_epochs", "40")
    page.fill("#f-method-embedding-hyperparameters-logging_steps", "1")
    page.fill("#f-method-embedding-hyperparameters-checkpoint_steps", "100000")
    page.fill("#f-suffix", "dash")
    page.fill("#f-seed", "7")
    page.get_by_role("button", name="Create job").click()
    page.wait_for_url(re.compile(r"#/jobs/ftjob-"))
    job_id = page.url.rsplit("/", 1)[1]
    job = job_status(server, job_id)
    assert job["method"]["embedding"]["loss"] == "cosent" and job["seed"] == 7
    assert job["hyperparameters"]["batch_size"] == 8 and job["hyperparameters"]["n_epochs"] == 40
    assert job["hyperparameters"]["learning_rate"] == 5e-5  # untouched: the default
    state["job"] = job_id


def test_loss_curve_grows_as_events_arrive(server: Server, page, state: dict) -> None:
    job_id = state["job"]
    page.goto(f"/#/jobs/{job_id}")
    expect(page.get_by_role("heading", name=job_id)).to_be_visible()
    seen = [points(page)]
    deadline = time.monotonic() + 150
    # The same page, never reloaded: each new count came over the event stream.
    while len(set(seen)) < 4 and time.monotonic() < deadline:
        page.wait_for_timeout(500)
        seen.append(points(page))
    assert seen == sorted(seen), seen
    assert len(set(seen)) >= 4, f"the curve did not grow: {seen}"
    expect(page.locator("#job-status")).to_have_text("running")
    expect(page.locator("polyline.series[data-series='learning rate']")).to_be_visible()
    shoot(page, "job-running")
    page.goto("/#/jobs")
    row = page.locator("table.jobs tbody tr").filter(has_text=job_id)
    expect(row).to_contain_text("running")
    expect(row.locator("progress")).to_be_visible()
    shoot(page, "jobs")


def test_pause_resume_and_cancel_from_the_buttons(server: Server, page, state: dict) -> None:
    job_id = state["job"]
    page.goto(f"/#/jobs/{job_id}")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#job-status")).to_have_text("paused", timeout=90_000)
    job = job_status(server, job_id)
    assert job["status"] == "paused"
    paused_at = job["progress"]["step"]
    # The pause's checkpoint is listed; the curve holds every loss the job reported.
    expect(page.get_by_role("region", name="Checkpoints").locator("tbody tr")).to_have_count(1)
    events = server.client.get(f"/v1/fine_tuning/jobs/{job_id}/events",
                               params={"type": "metrics", "limit": 1000}).json()["data"]
    expect(page.locator("polyline.series[data-series='loss']")).to_have_attribute(
        "data-points", str(sum("loss" in e["data"] for e in events)))
    expect(page.get_by_role("button", name="Pause")).to_be_disabled()

    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#job-status")).to_have_text(re.compile("queued|running"))
    deadline = time.monotonic() + 120
    while job_status(server, job_id)["progress"]["step"] <= paused_at + 1:
        assert time.monotonic() < deadline, "the resumed job made no progress"
        time.sleep(0.5)
    expect(page.locator("#job-status")).to_have_text("running")
    # A user's pause and resume is a second run of the same attempt, not a second attempt.
    resumed = job_status(server, job_id)
    assert (resumed["attempts"], resumed["runs"], resumed["failures"]) == (1, 2, 0)
    expect(page.locator(".facts")).to_contain_text("1 of 3")
    before = points(page)
    expect(page.locator("polyline.series[data-series='loss']")).not_to_have_attribute(
        "data-points", str(before), timeout=60_000)

    page.get_by_role("button", name="Cancel").click()  # the confirmation is accepted
    expect(page.locator("#job-status")).to_have_text("cancelled", timeout=90_000)
    assert job_status(server, job_id)["status"] == "cancelled"
    expect(page.get_by_role("button", name="Resume")).to_be_disabled()
    expect(page.get_by_role("region", name="Evaluation")).to_contain_text(
        "Not evaluated: the job was cancelled before it finished.")
    # Its checkpoint keeps the one name it was given when written.
    names = page.get_by_role("region", name="Checkpoints").locator("tbody code")
    expect(names.first).to_have_text(re.compile(rf"^{job_id}:ckpt-step-\d+$"))
    shoot(page, "job-cancelled")


@pytest.fixture(scope="module")
def versions(server: Server, stsb_slice: Path, model_id: str,
             tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Two short jobs: versions 1 and 2 of one registered model, each evaluated."""
    path = tmp_path_factory.mktemp("dash") / "sts-48.csv"
    path.write_bytes(b"\n".join(stsb_slice.read_bytes().split(b"\n")[200:248]) + b"\n")
    file_id = server.upload(path)["id"]
    jobs = []
    for lr in (5e-5, 1e-4):
        created = server.client.post("/v1/fine_tuning/jobs", json={
            "model": model_id, "training_file": file_id, "suffix": "v", "seed": 3,
            "registered_model": REGISTERED,
            "method": {"type": "embedding", "embedding": {"loss": "cosent", "hyperparameters": {
                "n_epochs": 1, "batch_size": 16, "learning_rate": lr}}}})
        assert created.status_code == 200, created.text
        jobs.append(created.json()["id"])
    done = [server.wait_for(job_id, timeout=300) for job_id in jobs]
    assert [j["status"] for j in done] == ["succeeded", "succeeded"], [j["error"] for j in done]
    return done


def test_model_versions_with_their_evaluation(server: Server, page, versions: list[dict]) -> None:
    page.goto("/#/models")
    row = page.locator("tr").filter(has_text=REGISTERED)
    expect(row).to_contain_text("2")
    expect(page.get_by_role("region", name="All models")).to_contain_text(
        versions[1]["fine_tuned_model"])
    shoot(page, "models")
    row.get_by_role("link", name=REGISTERED).click()
    expect(page.get_by_role("heading", name=REGISTERED, exact=True)).to_be_visible()
    expect(page.locator("table.versions tbody tr")).to_have_count(2)
    # The latest version's evaluation against its base model, as the registry has it.
    version = server.client.get(f"/v1/registered_models/{REGISTERED}/versions/2").json()
    evaluation = version["evaluation"]
    assert evaluation["primary_metric"] == "spearman_cosine"
    expect(page.locator("#version-detail h2").first).to_have_text("Version 2")
    primary = page.locator("#version-detail table.eval-table tbody tr").first
    expect(primary).to_contain_text("spearman_cosine")
    cells = primary.locator("td")
    expect(cells.nth(1)).to_have_text(fmt(evaluation["base_model"]["spearman_cosine"]))
    expect(cells.nth(2)).to_have_text(fmt(evaluation["fine_tuned_model"]["spearman_cosine"]))
    # Side by side.
    page.check("#cmp-1")
    page.check("#cmp-2")
    page.get_by_role("button", name="Compare selected versions").click()
    comparison = page.locator("#comparison")
    expect(comparison).to_contain_text("spearman_cosine")
    expect(comparison).to_contain_text("learning_rate")  # the spec field that differs
    shoot(page, "model")


def fmt(value: float) -> str:
    """A metric as the dashboard prints it (four significant digits)."""
    text = repr(float(f"{value:.4g}"))
    return text.removesuffix(".0")


def test_move_an_alias(server: Server, page, versions: list[dict]) -> None:
    page.goto(f"/#/models/{REGISTERED}")
    page.fill("#alias-name", "production")
    page.select_option("#alias-version", "1")
    page.locator("#alias-name").press("Enter")
    expect(page.locator("#alias-list")).to_contain_text("production → v1")
    assert server.client.get(f"/v1/registered_models/{REGISTERED}").json()["aliases"] == {
        "production": 1}
    page.select_option("#alias-version", "2")
    page.get_by_role("button", name="Move alias").click()
    expect(page.locator("#alias-list")).to_contain_text("production → v2")
    assert server.client.get(f"/v1/registered_models/{REGISTERED}").json()["aliases"] == {
        "production": 2}
    expect(page.locator("tr", has=page.locator("#cmp-2"))).to_contain_text("production")
    expect(page.locator("tr", has=page.locator("#cmp-1"))).not_to_contain_text("production")


def test_deploy_a_version_here_and_roll_it_back(server: Server, page, versions: list[dict]
                                                ) -> None:
    page.goto(f"/#/models/{REGISTERED}?v=1")
    page.fill("#deploy-alias", "staging")
    page.get_by_role("button", name="Deploy here").click()
    rows = page.locator("table.deployments tbody tr")
    expect(rows.first).to_contain_text("succeeded", timeout=120_000)
    expect(rows.first).to_contain_text("passed")
    expect(rows.first).to_contain_text(f"local {REGISTERED}@staging")
    assert server.client.get(f"/v1/registered_models/{REGISTERED}").json()["aliases"][
        "staging"] == 1
    shoot(page, "deployments")
    # Nothing was live there before: the rollback is refused, and the page says why.
    rows.first.get_by_role("button", name="Roll back").click()
    expect(page.locator("#version-detail [role=status]").last).to_contain_text(
        "Nothing to roll back to")


def test_system_page_shows_workers_and_queue(server: Server, page) -> None:
    page.goto("/#/system")
    workers = server.client.get("/v1/workers").json()
    row = page.locator("table.workers tbody tr").first
    expect(row).to_contain_text(workers["data"][0]["id"])
    expect(row).to_contain_text("idle")
    expect(page.locator("#queue-depth")).to_have_text(str(workers["queued"]))
    shoot(page, "system")


def test_job_page_lists_checkpoints_with_their_metrics(server: Server, page) -> None:
    """A supervised job's checkpoints (written into the server's database as a job process
    writes them) in a table with OpenAI's metrics, oldest first."""
    from tuneforge.db.store import Store, new_id
    from tuneforge.training.spec import JobCreate

    spec = JobCreate.model_validate(
        {"model": "m", "training_file": "file-x", "seed": 1, "method": {"type": "supervised"}}
    ).model_dump(mode="json")
    store = Store(f"sqlite:///{server.home / 'tuneforge.db'}")
    job_id = new_id("ftjob")
    store.insert_job(
        {"id": job_id, "kind": "supervised", "model": "m", "status": "succeeded",
         "spec": spec | {"training_files": ["file-x"]}, "created_at": time.time()},
        "created",
    )
    for step, loss in ((27, 1.25), (54, 0.5)):
        metrics = {"step": step, "train_loss": loss, "train_mean_token_accuracy": 0.75,
                   "valid_loss": loss + 0.125, "valid_mean_token_accuracy": 0.625,
                   "full_valid_loss": loss + 0.25, "full_valid_mean_token_accuracy": 0.6}
        store.add_checkpoint(
            {"id": new_id("ftckpt"), "job_id": job_id, "step": step, "epoch": step / 27,
             "created_at": time.time(), "path": "x", "metrics": metrics},
            f"Checkpoint saved at step {step}.",
        )
    store.dispose()

    page.goto(f"/#/jobs/{job_id}")
    checkpoints = page.locator("table.checkpoints")
    expect(checkpoints.locator("tbody tr")).to_have_count(2)
    headers = checkpoints.locator("thead th").all_inner_texts()
    assert headers == ["Step", "Epoch", "Train loss", "Train acc", "Valid loss", "Valid acc",
                       "Full valid loss", "Full valid acc", "Saved", "Name"]
    first, last = (checkpoints.locator("tbody tr").nth(i).locator("td") for i in (0, 1))
    assert first.all_inner_texts()[:8] == ["27", "1", "1.25", "0.75", "1.375", "0.625", "1.5",
                                           "0.6"]
    assert last.all_inner_texts()[2] == "0.5"
    expect(last.locator("code")).to_have_text(f"{job_id}:ckpt-step-54")
    shoot(page, "job-checkpoints")


# Last: the earlier tests count the datasets they uploaded.
def test_mine_hard_negatives_from_a_pair_datasets_page(
    server: Server, page, tmp_path: Path
) -> None:
    import json

    from ..conftest import stsb_rows

    close = [r for r in stsb_rows() if float(r[2]) >= 4.0][:40]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"anchor": a, "positive": b}) + "\n" for a, b, _ in close))
    pairs = server.upload(path)["id"]
    page.goto(f"/#/datasets/{pairs}")
    form = page.locator("#mining-form")
    expect(form).to_be_visible()
    form.get_by_label("Negatives per pair").fill("2")
    form.get_by_label("Take up to rank (range_max)").fill("15")
    form.get_by_label("Output").select_option("n-tuple")
    form.get_by_role("button", name="Mine hard negatives").click()
    result = page.locator("#mining-result")
    expect(result.get_by_role("link", name="Open the mined dataset")).to_be_visible(timeout=60_000)
    expect(result).to_contain_text("n-tuple")
    mined_id = re.search(r"New dataset (file-\w+)", result.inner_text()).group(1)
    mined = server.client.get(f"/v1/datasets/{mined_id}").json()
    assert mined["mining"]["output_format"] == "n-tuple" and mined["mining"]["source"] == pairs
    assert mined["mining"]["settings"]["num_negatives"] == 2
    assert mined["mining"]["settings"]["range_max"] == 15
    rows_out = mined["mining"]["rows_out"]
    expect(result).to_contain_text(f"{rows_out} rows")
    # The bars count every negative, by rank.
    counted = sum(int(t.replace(",", "")) for t in
                  result.locator(".hbar-value").all_inner_texts())
    assert counted == mined["mining"]["negatives"] == 2 * rows_out
    # The mined dataset's page shows its report and links back; it offers no mining itself.
    result.get_by_role("link", name="Open the mined dataset").click()
    expect(page.get_by_role("heading", name="Mining report")).to_be_visible()
    expect(page.locator("#mining-form")).to_have_count(0)
    expect(page.get_by_role("link", name=pairs)).to_be_visible()
    shoot(page, "dataset-mined")
