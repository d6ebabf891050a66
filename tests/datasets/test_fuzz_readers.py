"""Property-based fuzzing of the readers: any JSONL, CSV, Parquet or random byte string
becomes a well-formed report (the same streamed as read in memory) and a previewable file,
never an exception. bench/fuzz_files.py runs the same checks over 10,000 and more files."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings

from tests.offline_models import MINILM
from tuneforge.datasets.statistics import load_tokenizer

from .hostile_files import FILES, check_file

FUZZ = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check(content: bytes, fmt: str, name: str, tokenizer: Any = None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        check_file(Path(folder), name, content, fmt, tokenizer)


@settings(FUZZ, max_examples=40)  # counting tokens makes these the slow ones
@given(FILES["well_formed"])
def test_any_well_formed_file_is_a_report(content: bytes) -> None:
    fmt = "jsonl" if content.lstrip().startswith(b"{") else "csv"
    # Counting tokens as an upload does (all-MiniLM-L6-v2, in the tests' offline cache).
    check(content, fmt, f"f.{fmt}", load_tokenizer(MINILM))


@FUZZ
@given(FILES["jsonl"])
def test_any_jsonl_is_a_report(content: bytes) -> None:
    check(content, "jsonl", "f.jsonl")


@FUZZ
@given(FILES["csv"])
def test_any_csv_is_a_report(content: bytes) -> None:
    check(content, "csv", "f.csv")


@FUZZ
@given(FILES["parquet"])
def test_any_parquet_is_a_report(content: bytes) -> None:
    check(content, "parquet", "f.parquet")


@FUZZ
@given(FILES["random"])
def test_random_bytes_are_a_report_in_every_format(content: bytes) -> None:
    for fmt in ("jsonl", "csv", "parquet"):
        check(content, fmt, f"f.{fmt}")
