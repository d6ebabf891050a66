"""The `tuneforge` command line, run as a user runs it: a real process, against a real server
(or, for `tuneforge train`, on its own data folder), checked by what it prints and exits with."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import get_args

import pytest
import yaml

from tuneforge.cli.jobs import job_body

from .conftest import Server

HYPERPARAMETERS = "method.embedding.hyperparameters"


def tuneforge(
    *args: str | Path, env: dict[str, str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tuneforge.cli", *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def user_env(**extra: str) -> dict[str, str]:
    """The test's environment (offline Hub) as a user's shell, output piped, no width set."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TUNEFORGE_URL")}
    return dict(env, **extra)


@pytest.fixture(scope="module")
def cli_env(server: Server) -> dict[str, str]:
    return user_env(TUNEFORGE_URL=server.url)


@pytest.fixture(scope="module")
def triplets_file(server: Server, german_triplets: Path) -> str:
    return server.upload(german_triplets)["id"]


# -- without a server --------------------------------------------------------------------------


def test_help_starts_without_torch_or_http() -> None:
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, tuneforge.cli; "
            "print([m for m in ('torch', 'transformers', 'httpx') if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]"
    result = tuneforge("--help", env=user_env())
    assert result.returncode == 0
    for command in ("serve", "worker", "train", "files", "datasets", "jobs", "models"):
        assert command in result.stdout


def test_options_override_the_config() -> None:
    config = {
        "model": "org/base",
        "training_files": ["file-a", "file-b"],
        "suffix": "x",
        "method": {
            "type": "embedding",
            "embedding": {
                "loss": "cosent",
                "hyperparameters": {"n_epochs": 3, "warmup_ratio": 0.2},
            },
        },
    }
    body = job_body(
        config,
        training_files=["file-c"],
        loss="cosine",
        hyperparameters={"n_epochs": 1, "batch_size": None, "learning_rate": 1e-4},
        seed=7,
    )
    assert body == {
        "model": "org/base",
        "training_file": "file-c",
        "suffix": "x",
        "seed": 7,
        "method": {
            "type": "embedding",
            "embedding": {
                "loss": "cosine",
                "hyperparameters": {"n_epochs": 1, "warmup_ratio": 0.2, "learning_rate": 1e-4},
            },
        },
    }
    assert config["method"]["embedding"]["loss"] == "cosent"  # the config is left alone
    assert job_body({}, model="m", training_files=["f1", "f2"]) == {
        "model": "m",
        "training_files": ["f1", "f2"],
    }


def test_jobs_create_names_the_method_type() -> None:
    body = job_body({}, model="m", method_type="reranker", hyperparameters={"n_epochs": 2})
    assert body["method"] == {"type": "reranker", "reranker": {"hyperparameters": {"n_epochs": 2}}}
    assert job_body({}, model="m", method_type="reranker")["method"] == {"type": "reranker"}


def test_key_scopes_are_the_keys_scopes() -> None:
    # The CLI spells the scopes out (importing them would load SQLAlchemy into `--help`).
    from tuneforge.cli.keys import KeyScope
    from tuneforge.security.keys import Scope

    assert get_args(KeyScope) == tuple(s.value for s in Scope)


def test_unreachable_server_is_named() -> None:
    result = tuneforge("jobs", "list", "--url", "http://127.0.0.1:1", env=user_env())
    assert result.returncode == 1
    assert "Cannot reach tuneforge at http://127.0.0.1:1" in result.stderr


def test_train_refuses_bad_spec_and_bad_file_before_any_job(
    tmp_path: Path, stsb_slice: Path
) -> None:
    from tuneforge.db.store import Store

    home = tmp_path / "home"
    env = user_env(TUNEFORGE_HOME=str(home))
    (tmp_path / "broken.jsonl").write_text(
        '{"question": "a", "positive": "b"}\n{"question": \n', encoding="utf-8"
    )
    (tmp_path / "data.csv").write_bytes(stsb_slice.read_bytes())
    spec = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "training_file": "data.csv",
        "method": {
            "embedding": {"loss": "cosent", "hyperparameters": {"batch_size": 0, "n_epochs": 1}}
        },
    }
    (tmp_path / "bad-spec.yaml").write_text(yaml.safe_dump(spec))
    result = tuneforge("train", tmp_path / "bad-spec.yaml", env=env)
    assert result.returncode == 1
    assert (
        f"{HYPERPARAMETERS}.batch_size: Input should be greater than or equal to 1" in result.stderr
    )

    spec["method"]["embedding"]["hyperparameters"]["batch_size"] = 16
    spec["training_files"] = ["data.csv", "broken.jsonl"]
    del spec["training_file"]
    (tmp_path / "bad-file.yaml").write_text(yaml.safe_dump(spec))
    result = tuneforge("train", tmp_path / "bad-file.yaml", env=env)
    assert result.returncode == 1
    assert "training_files[1]" in result.stderr and "broken.jsonl is not valid" in result.stderr
    assert "line 2: invalid_json: Not valid JSON" in result.stderr
    assert Store(f"sqlite:///{home / 'tuneforge.db'}").list_jobs() == ([], False)


# -- against a server --------------------------------------------------------------------------


@pytest.mark.slow
def test_upload_of_a_broken_file_lists_its_problems_by_line(
    server: Server, cli_env: dict, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        '{"question": "Wo?", "positive": "Hier."}\n'
        '{"question": "Wann?", "positive": \n'
        '{"question": "Wer?"}\n'
        '["a", "b"]\n',
        encoding="utf-8",
    )
    result = tuneforge("files", "upload", broken, env=cli_env)
    assert result.returncode == 1
    file_id = result.stdout.split()[0]
    assert file_id.startswith("file-") and "status: error" in result.stdout
    assert "line 2: invalid_json: Not valid JSON" in result.stderr
    assert "line 3, column 'positive': missing_column" in result.stderr
    assert "line 4: not_an_object: Expected a JSON object, got list." in result.stderr

    shown = tuneforge("datasets", "show", file_id, env=cli_env)
    assert shown.returncode == 0
    assert "invalid, 3 problem(s)" in shown.stdout
    assert re.search(r"│ 3\s+│ positive\s+│ missing_column\s+│", shown.stdout)
    assert re.search(r"│ invalid_json\s+│ 1\s+│", shown.stdout)

    listed = tuneforge("files", "list", env=cli_env)
    assert re.search(rf"{file_id}\s+│ broken.jsonl\s+│.*│ error", listed.stdout)
    assert (
        tuneforge("files", "delete", file_id, env=cli_env).stdout.strip() == f"Deleted {file_id}."
    )
    gone = tuneforge("files", "get", file_id, env=cli_env)
    assert gone.returncode == 1 and f"No file with id '{file_id}'" in gone.stderr


def test_jobs_checkpoints_lists_every_checkpoint_with_its_metrics(tmp_path: Path) -> None:
    from tuneforge.db.store import Store, new_id

    # A server of its own: the job is written straight into its database.
    server = Server(tmp_path / "tuneforge-data")
    cli_env = user_env(TUNEFORGE_URL=server.url)
    try:
        store = Store(f"sqlite:///{server.home / 'tuneforge.db'}")
        job_id = new_id("ftjob")
        store.insert_job(
            {
                "id": job_id,
                "kind": "dpo",
                "model": "m",
                "status": "succeeded",
                "spec": {"training_files": ["file-a"], "validation_file": None},
                "created_at": time.time(),
            },
            "created",
        )
        metrics = {
            2: {
                "step": 2,
                "train_loss": 0.69,
                "train_mean_token_accuracy": 0.5,
                "full_valid_loss": 0.6,
                "full_valid_mean_token_accuracy": 0.55,
                "train_reward_accuracy": 0.25,
                "full_valid_reward_accuracy": 0.75,
                "train_reward_margin": 0.01,
                "full_valid_reward_margin": 0.125,
            },
            # Stored before checkpoints had OpenAI's metrics: shown, with empty cells.
            1: {"loss": 0.7},
        }
        for step, values in metrics.items():
            store.add_checkpoint(
                {
                    "id": new_id("ftckpt"),
                    "job_id": job_id,
                    "step": step,
                    "epoch": step / 2,
                    "created_at": time.time(),
                    "path": "x",
                    "metrics": values,
                },
                f"Checkpoint saved at step {step}.",
            )
        store.dispose()

        result = tuneforge("jobs", "checkpoints", job_id, env=cli_env)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        header = next(line for line in lines if "train_loss" in line).replace("┃", " ").split()
        assert header == [
            "step",
            "epoch",
            "train_loss",
            "train_acc",
            "valid_loss",
            "valid_acc",
            "full_valid_loss",
            "full_valid_acc",
            "train_reward_acc",
            "train_margin",
            "full_valid_reward_acc",
            "full_valid_margin",
            "checkpoint",
        ]
        rows = [line for line in lines if f"{job_id}:ckpt-step-" in line]
        assert [row.split()[1] for row in rows] == ["1", "2"]  # oldest first
        assert "0.6900" in rows[1] and "0.7500" in rows[1] and "0.1250" in rows[1]
        assert "0.7000" not in rows[0]  # no train_loss column for an old metric's name
        newest = tuneforge("jobs", "checkpoints", job_id, "--limit", "1", env=cli_env).stdout
        assert [line.split()[1] for line in newest.splitlines() if "ckpt-step-" in line] == ["2"]
    finally:
        server.stop()


@pytest.mark.slow
def test_jobs_create_names_the_bad_field_and_the_bad_file(
    server: Server, cli_env: dict, triplets_file: str, model_id: str
) -> None:
    result = tuneforge(
        "jobs",
        "create",
        "--model",
        model_id,
        "--training-file",
        triplets_file,
        "--batch-size",
        "0",
        env=cli_env,
    )
    assert result.returncode == 1
    assert "validation_error" in result.stderr
    assert (
        f"{HYPERPARAMETERS}.batch_size: Input should be greater than or equal to 1" in result.stderr
    )

    result = tuneforge(
        "jobs",
        "create",
        "--model",
        model_id,
        "--training-file",
        triplets_file,
        "--loss",
        "cosent",
        env=cli_env,
    )
    assert result.returncode == 1
    assert "holds triplet rows; loss 'cosent' trains on scored_pair" in result.stderr
    assert "param: training_file" in result.stderr
    assert server.client.get("/v1/fine_tuning/jobs").json()["data"] == []


@pytest.mark.slow
def test_jobs_create_watch_follows_a_training_to_its_model(
    server: Server, cli_env: dict, triplets_file: str, model_id: str, tmp_path: Path
) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": model_id,
                "suffix": "de",
                "seed": 3,
                "method": {
                    "type": "embedding",
                    "embedding": {
                        "loss": "mnrl",
                        "hyperparameters": {"n_epochs": 3, "batch_size": 16},
                    },
                },
            }
        )
    )
    watching = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tuneforge.cli",
            "jobs",
            "create",
            "--config",
            str(config),
            "--training-file",
            triplets_file,
            "--epochs",
            "1",
            "--watch",
        ],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        job_id = watching.stdout.readline().strip()  # type: ignore[union-attr]
        assert job_id.startswith("ftjob-")
        server.wait_for(job_id, ("running",), timeout=60)

        # A second job waits in the queue meanwhile (one worker); cancelled there, it ends
        # at once, and watching it exits 1.
        queued = tuneforge(
            "jobs", "create", "--model", model_id, "--training-file", triplets_file, env=cli_env
        )
        assert queued.returncode == 0
        second = queued.stdout.strip()
        # Paused while it waits, it stays out of the queue until resumed.
        paused = tuneforge("jobs", "pause", second, env=cli_env)
        assert paused.stdout.strip() == f"Job {second} paused."
        assert json.loads(tuneforge("jobs", "get", second, env=cli_env).stdout)["status"] == (
            "paused"
        )
        resumed = tuneforge("jobs", "resume", second, env=cli_env)
        assert resumed.stdout.strip() == f"Job {second} is queued."
        cancelled = tuneforge("jobs", "cancel", second, env=cli_env)
        assert cancelled.stdout.strip() == f"Job {second} cancelled."
        watched = tuneforge("jobs", "watch", second, env=cli_env)
        assert watched.returncode == 1
        assert f"Job {second} was cancelled." in watched.stdout

        out, err = watching.communicate(timeout=600)
    finally:
        watching.kill()
    assert watching.returncode == 0, err
    model = re.search(r"Fine-tuned model: (ft:all-MiniLM-L6-v2:de:\S+)", out)
    assert model, out
    fine_tuned = model.group(1)
    assert f"Job {job_id} succeeded." in out
    assert re.search(r"succeeded\s+━+ step (\d+)/\1 100% loss \d", out)
    # Message events, each once, in order.
    assert out.count("Job started on worker") == 1 and out.count("Job succeeded;") == 1
    assert out.index("Files validated") < out.index("Job started") < out.index("Job succeeded;")

    job = json.loads(tuneforge("jobs", "get", job_id, env=cli_env).stdout)
    assert job["status"] == "succeeded" and job["fine_tuned_model"] == fine_tuned
    assert job["hyperparameters"]["n_epochs"] == 1 and job["hyperparameters"]["batch_size"] == 16
    assert job["seed"] == 3 and job["training_file"] == triplets_file

    listed = tuneforge("jobs", "list", env=cli_env).stdout
    row = next(line for line in listed.splitlines() if job_id in line)
    assert re.search(rf"{job_id}\s+│ succeeded\s+│ {model_id}\s+│ {fine_tuned}\s+│ 100%", row)
    assert re.search(rf"{second}\s+│ cancelled", listed)

    events = tuneforge("jobs", "events", job_id, "--limit", "3", env=cli_env).stdout
    assert len(events.splitlines()) == 3
    assert f"Job succeeded; model saved as {fine_tuned} (" in events.splitlines()[-1]
    assert fine_tuned in tuneforge("models", "list", env=cli_env).stdout

    again = tuneforge("jobs", "watch", job_id, env=cli_env)
    assert again.returncode == 0 and f"Fine-tuned model: {fine_tuned}" in again.stdout
    late = tuneforge("jobs", "cancel", job_id, env=cli_env)
    assert late.returncode == 1 and "it cannot be cancelled" in late.stderr
    not_paused = tuneforge("jobs", "resume", job_id, env=cli_env)
    assert not_paused.returncode == 1 and "only a paused job resumes" in not_paused.stderr


# -- training locally --------------------------------------------------------------------------


@pytest.mark.slow
def test_train_runs_a_spec_locally_and_saves_a_loadable_model(
    tmp_path: Path, stsb_slice: Path, model_id: str
) -> None:
    from sentence_transformers import SentenceTransformer

    specs = tmp_path / "specs"
    (specs / "data").mkdir(parents=True)
    # A third of the slice: this test is about the command, not the model's quality.
    lines = stsb_slice.read_bytes().splitlines(keepends=True)[:240]
    (specs / "data" / "sts.csv").write_bytes(b"".join(lines))
    (specs / "job.yaml").write_text(
        yaml.safe_dump(
            {
                "model": model_id,
                "training_file": "data/sts.csv",
                "suffix": "sts",
                "method": {
                    "type": "embedding",
                    "embedding": {
                        "loss": "cosent",
                        "hyperparameters": {"n_epochs": 1, "batch_size": 16},
                    },
                },
            }
        )
    )
    home = tmp_path / "home"
    started = time.monotonic()
    # Run from elsewhere: the file path is relative to the YAML's folder, not to the cwd.
    result = tuneforge(
        "train",
        specs / "job.yaml",
        env=user_env(TUNEFORGE_HOME=str(home)),
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"training_file: sts.csv -> file-\w+ \(scored_pair, 240 rows\)", out)
    job_id = re.search(r"Job (ftjob-\w+) succeeded\.", out).group(1)  # type: ignore[union-attr]
    assert re.search(r"Fine-tuned model: ft:all-MiniLM-L6-v2:sts:\w+", out)
    assert re.search(r"succeeded\s+━+ step (\d+)/\1 100%", out)
    assert "Job started on worker" in out and "Job succeeded;" in out
    saved = Path(re.search(r"Saved in: (.+)", out).group(1))  # type: ignore[union-attr]
    assert saved == home.resolve() / "models" / job_id
    print(f"train took {time.monotonic() - started:.0f}s")

    model = SentenceTransformer(str(saved), device="cpu")
    embedding = model.encode("A man is playing a guitar.")
    assert embedding.shape == (384,) and float((embedding**2).sum()) > 0
