"""Hostile files become reports, never exceptions: each probe of issue 22 that reached an
unhandled exception, or was accepted when it should not be, with the problem it now gets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace

from tuneforge.api.schemas.datasets import DatasetRowsPublic
from tuneforge.datasets.classification import read_classification_file
from tuneforge.datasets.kinds import read_upload
from tuneforge.datasets.preview import preview_rows
from tuneforge.datasets.statistics import column_statistics

PAIR = {"anchor": "a question", "positive": "its answer"}


def upload(tmp_path: Path, name: str, content: bytes, fmt: str, **options):
    path = tmp_path / name
    path.write_bytes(content)
    return read_upload(path, fmt, min_rows=1, keep_rows=False, **options).report


def codes(report: dict) -> list[tuple[int | None, str]]:
    return [(p["line"], p["code"]) for p in report["problems"]]


def jsonl(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def test_json_nested_10000_deep_is_a_problem_on_its_line(tmp_path: Path) -> None:
    deep = '{"anchor": ' + "[" * 10_000 + "]" * 10_000 + ', "positive": "p"}'
    report = upload(tmp_path, "d.jsonl", jsonl(json.dumps(PAIR), deep), "jsonl")
    assert codes(report) == [(2, "nested_too_deep")]


def test_an_integer_of_5000_digits_is_a_problem_on_its_line(tmp_path: Path) -> None:
    huge = '{"anchor": "a", "positive": "p", "score": ' + "9" * 5000 + "}"
    report = upload(tmp_path, "n.jsonl", jsonl(json.dumps(PAIR), huge), "jsonl")
    assert codes(report) == [(2, "number_too_long")]
    assert "set_int_max_str_digits" not in report["problems"][0]["message"]


def test_a_csv_header_field_over_128_kib_is_read(tmp_path: Path) -> None:
    content = ("anchor,positive," + "x" * 200_000 + "\na,b,c\n").encode()
    report = upload(tmp_path, "h.csv", content, "csv")
    assert report["kind"] == "embedding" and not report["valid"]
    assert ("unknown_column", 2) in {(p["code"], p["line"]) for p in report["problems"]}


def test_a_lone_surrogate_is_a_problem_and_never_reaches_the_tokenizer(tmp_path: Path) -> None:
    line = '{"anchor": "bad \\ud800 text", "positive": "p"}'
    pair = '{"anchor": "fine \\ud83d\\ude00", "positive": "p"}'  # a real pair is fine
    report = upload(tmp_path, "s.jsonl", jsonl(pair, line), "jsonl", tokenizer=word_tokenizer())
    assert codes(report) == [(2, "invalid_unicode")]
    assert report["statistics"]["columns"]["anchor"]["tokens"]["max"] == 2


def test_the_tokenizer_counts_a_text_it_refuses_mended() -> None:
    stats = column_statistics(["one two", "three \ud800"], word_tokenizer())
    assert stats["tokens"]["max"] == 2 and stats["chars"]["max"] == 7


def test_nul_in_json_strings_and_csv_cells_is_a_problem_per_line(tmp_path: Path) -> None:
    report = upload(
        tmp_path,
        "z.jsonl",
        jsonl(json.dumps(PAIR), '{"anchor": "a\\u0000b", "positive": "p"}'),
        "jsonl",
    )
    assert [(p["line"], p["column"], p["code"]) for p in report["problems"]] == [
        (2, "anchor", "nul_character")
    ]
    # An escaped backslash before u0000 is the text \u0000, not a NUL.
    fine = upload(tmp_path, "e.jsonl", jsonl('{"anchor": "a\\\\u0000", "positive": "p"}'), "jsonl")
    assert fine["valid"]
    csv_report = upload(tmp_path, "z.csv", b"anchor,positive\na,b\nc\x00,d\ne,f\n", "csv")
    assert codes(csv_report) == [(3, "nul_character")]
    assert csv_report["statistics"]["rows"] == 2


def test_utf16_without_a_bom_is_told_on_line_1(tmp_path: Path) -> None:
    text = "anchor,positive\nhello,world\nhow,are you\n"
    for codec, endian in (("utf-16-le", "little-endian"), ("utf-16-be", "big-endian")):
        report = upload(tmp_path, f"{codec}.csv", text.encode(codec), "csv")
        assert codes(report) == [(1, "utf16_encoding")]
        assert endian in report["problems"][0]["message"]
        assert report["statistics"]["rows"] == 0


def test_invalid_parquet_does_not_show_the_server_path(tmp_path: Path) -> None:
    report = upload(tmp_path, "file-abc", b"PAR1 not really parquet PAR1", "parquet")
    assert codes(report) == [(None, "invalid_parquet")]
    assert str(tmp_path) not in report["problems"][0]["message"]


def test_multi_label_cells_nested_deeply_are_invalid_labels(tmp_path: Path) -> None:
    deep = "[" * 5000 + "]" * 5000
    rows = [{"text": "t1", "labels": deep}, {"text": "t2", "labels": '["a", "b"]'}]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = read_classification_file(path, "jsonl", min_rows=1, multi_label=True)
    assert [(p["line"], p["code"]) for p in data.report["problems"]][0] == (1, "invalid_label")
    assert len(data.report["problems"][0]["message"]) < 300


def test_preview_of_nested_parquet_with_non_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "nested.parquet"
    struct = pa.array([{"raw": b"\xff\xfe\x00bad", "deep": [[[1.5, float("nan")]]]}])
    pq.write_table(pa.table({"anchor": ["a"], "positive": ["p"], "meta": struct}), path)
    page = preview_rows(path, "parquet", {"has_header": True}, offset=0, limit=5)
    public = DatasetRowsPublic.model_validate(page).model_dump_json()
    assert json.loads(public)["data"][0]["values"]["meta"]["deep"] == [[[1.5, "nan"]]]


def test_preview_of_deep_json_is_cut_to_text(tmp_path: Path) -> None:
    path = tmp_path / "deep.jsonl"
    path.write_bytes(jsonl('{"anchor": ' + "[" * 500 + "]" * 500 + ', "positive": "p"}'))
    page = preview_rows(path, "jsonl", {"has_header": True}, offset=0, limit=5)
    DatasetRowsPublic.model_validate(page).model_dump_json()
    assert page["total"] == 1


def test_validation_memory_grows_with_the_line_not_the_file(tmp_path: Path) -> None:
    """A 16 MB upload of 100,000 pairs, validated in a fresh process: its peak RSS grows by
    less than half the file (a few dozen bytes a row for the statistics; the reading before
    issue 22 held every record and row, and grew by about 4 times the file)."""
    path, small = tmp_path / "big.jsonl", tmp_path / "small.jsonl"
    line = '{{"anchor": "question {0} on a topic, long enough to be a real question", '
    line += '"positive": "answer {0}: a sentence or two that a model could learn from."}}\n'
    for file, rows in ((path, 100_000), (small, 3000)):
        with file.open("w") as out:
            out.writelines(line.format(i) for i in range(rows))
    script = f"""
import json, resource, threading, time
from pathlib import Path
import psutil
from tuneforge.datasets.kinds import read_upload
from tuneforge.datasets.row_index import RowIndexBuilder
path = Path({str(path)!r})
read_upload(Path({str(small)!r}), "jsonl", min_rows=1, keep_rows=False)  # imports and all
process = psutil.Process()
before, peak, done = process.memory_info().rss, 0, threading.Event()
def sample():
    global peak
    while not done.is_set():
        peak = max(peak, process.memory_info().rss)
        time.sleep(0.005)
sampler = threading.Thread(target=sample)
sampler.start()
report = read_upload(path, "jsonl", min_rows=1, keep_rows=False, index=RowIndexBuilder()).report
done.set()
sampler.join()
growth_kb = (peak - before) // 1024
print(json.dumps({{"growth_kb": growth_kb, "rows": report["statistics"]["rows"]}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    size_kb = path.stat().st_size // 1024
    assert result["rows"] == 100_000
    assert result["growth_kb"] < size_kb // 2, (result, size_kb)


def word_tokenizer() -> Tokenizer:
    words = {"[UNK]": 0, "one": 1, "two": 2, "three": 3}
    tokenizer = Tokenizer(WordLevel(words, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    return tokenizer
