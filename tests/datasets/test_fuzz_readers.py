"""Property-based fuzzing of the readers: any JSONL, CSV, Parquet or random byte string
becomes a well-formed report (the same streamed as read in memory) and a previewable file,
never an exception. bench/fuzz_files.py runs the same checks over 10,000 and more files."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from .hostile_files import FILES, check_file

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check(content: bytes, fmt: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        check_file(Path(folder), name, content, fmt)


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
