"""Hypothesis strategies for hostile data files: JSONL, CSV and Parquet byte strings of valid
structure with hostile values (lone surrogates, NULs, deep nesting, numbers of thousands of
digits, long fields, odd encodings), and plain random bytes. Used by the fuzz tests
(tests/datasets/test_fuzz_readers.py) and bench/fuzz_files.py, which run each file through
the upload's validation and the row preview, and count what happens."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from tuneforge.api.schemas.datasets import DatasetRowsPublic
from tuneforge.datasets.kinds import read_upload
from tuneforge.datasets.preview import preview_rows
from tuneforge.datasets.row_index import RowIndexBuilder

COLUMNS = [
    "anchor",
    "positive",
    "negative",
    "question",
    "sentence1",
    "sentence2",
    "score",
    "text",
    "label",
    "labels",
    "messages",
    "prompt",
    "completion",
    "chosen",
    "rejected",
    "input",
    "preferred_output",
    "role",
    "content",
    "",
    "\x00",
    "\ud800",
    "a" * 300,
]
HOSTILE_TEXTS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",
    "x\udfff",
    "\ufeff",
    "\r",
    "\n\n",
    "\u2028",
    "é",
    "😀",
    "<|im_start|>",
    "[[[[",
    "[" * 3000,
    '["a", "b"]',
    "a;b;;",
    "NaN",
    "-inf",
    "1e999",
    "9" * 5000,
    "0.5",
    "5.1",
    "-1",
    "\\u0000",
    "\\ud800",
    '"',
    "'",
    ",",
    "\t",
]
DEEP_JSON = ["[" * n + "]" * n for n in (10, 900, 1100, 10_000)] + [
    '{"a":' * 2000 + "1" + "}" * 2000
]
HOSTILE_NUMBERS = ["9" * 4301, "-" + "1" * 5000, "1e400", "NaN", "Infinity", "-0", "1.5"]

texts = st.one_of(st.sampled_from(HOSTILE_TEXTS), st.text(max_size=40))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), texts)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(COLUMNS), inner, max_size=4)
    ),
    max_leaves=12,
)
records = st.dictionaries(st.sampled_from(COLUMNS), values, max_size=5)
messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "tool", "", "\x00"]),
            "content": values,
        }
    ),
    max_size=4,
)


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=True, allow_nan=True)


json_lines = st.one_of(
    records.map(_json_line),
    st.builds(lambda m: _json_line({"messages": m}), messages),
    st.sampled_from(DEEP_JSON).map(lambda deep: '{"anchor": ' + deep + ', "positive": "p"}'),
    st.sampled_from(HOSTILE_NUMBERS).map(lambda n: '{"anchor": "a", "score": ' + n + "}"),
    st.sampled_from(['{"text": "t", "labels": "' + "[" * 2000 + '"}', "[1, 2]", "null", "{", ""]),
    texts.map(lambda t: t.encode("utf-8", "surrogatepass").decode("utf-8", "replace")),
)
line_ends = st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n"])


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(json_lines, min_size=0, max_size=30))
    end = draw(line_ends)
    data = end.join(line.encode("utf-8", "surrogatepass") for line in lines)
    return draw(_encoded(data))


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    width = draw(st.integers(1, 4))
    header = draw(st.lists(st.sampled_from(COLUMNS), min_size=width, max_size=width))
    rows = draw(st.lists(st.lists(texts, min_size=0, max_size=width + 1), max_size=30))
    out = io.StringIO()
    writer = csv.writer(out, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])))
    if draw(st.booleans()):
        writer.writerow(header)
    if draw(st.integers(0, 9)) == 0:
        writer.writerow(["x" * 200_000, "y"])  # over the csv module's default field limit
    writer.writerows(rows)
    text = out.getvalue()
    if draw(st.booleans()):
        text += draw(st.sampled_from(['"unclosed, quote\n', 'a,"b\n"c', "\x00,\x00\n"]))
    return draw(_encoded(text.encode("utf-8", "surrogatepass")))


@st.composite
def _encoded(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` as it is, with a BOM, re-encoded as UTF-16 (no BOM) or with bytes spliced in."""
    how = draw(
        st.sampled_from(["utf-8", "utf-8", "utf-8", "bom", "utf-16-le", "utf-16-be", "splice"])
    )
    if how == "bom":
        return b"\xef\xbb\xbf" + data
    if how.startswith("utf-16"):
        return data.decode("utf-8", "surrogatepass").encode(how, "surrogatepass")
    if how == "splice" and data:
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    return data


@st.composite
def parquet_files(draw: st.DrawFn) -> bytes:
    rows = draw(st.integers(0, 12))
    columns: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(COLUMNS[:18]), min_size=1, max_size=4, unique=True)):
        kind = draw(st.sampled_from(["text", "binary", "float", "int", "struct", "list"]))
        if kind == "text":
            strings = st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["\x00", "a"]))
            columns[name] = pa.array(
                draw(st.lists(strings, min_size=rows, max_size=rows)), pa.string()
            )
        elif kind == "binary":
            blobs = st.one_of(st.none(), st.binary(max_size=12))
            columns[name] = pa.array(
                draw(st.lists(blobs, min_size=rows, max_size=rows)), pa.binary()
            )
        elif kind == "float":
            floats = st.one_of(st.none(), st.floats())
            columns[name] = pa.array(
                draw(st.lists(floats, min_size=rows, max_size=rows)), pa.float64()
            )
        elif kind == "int":
            ints = st.integers(-(2**63), 2**63 - 1)
            columns[name] = pa.array(draw(st.lists(ints, min_size=rows, max_size=rows)), pa.int64())
        elif kind == "struct":
            raw = st.fixed_dictionaries({"raw": st.binary(max_size=8), "n": st.floats()})
            columns[name] = pa.array(draw(st.lists(raw, min_size=rows, max_size=rows)))
        else:
            nested = st.lists(st.lists(st.text(max_size=5), max_size=3), max_size=3)
            columns[name] = pa.array(draw(st.lists(nested, min_size=rows, max_size=rows)))
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out, row_group_size=draw(st.sampled_from([1, 5, 1000])))
    data = out.getvalue()
    cut = draw(st.sampled_from(["whole", "whole", "truncated", "flipped"]))
    if cut == "truncated":
        return data[: draw(st.integers(0, len(data)))]
    if cut == "flipped" and len(data) > 8:
        at = draw(st.integers(4, len(data) - 5))
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    return data


# Texts a valid file may hold: any Unicode (no surrogates, no NULs), long or short.
fine_texts = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
    min_size=1,
    max_size=60,
).filter(str.strip)
labels = st.sampled_from(["a", "b", "c", "None", "1", "é ü"])


@st.composite
def well_formed_files(draw: st.DrawFn) -> bytes:
    """JSONL or CSV of one kind (pairs, scored pairs, classification, chat), mostly valid:
    the statistics' paths, with now and then one hostile line spliced in."""
    kind = draw(st.sampled_from(["pair", "scored", "classification", "multi", "chat"]))
    count = draw(st.integers(1, 25))
    rows: list[dict[str, Any]] = []
    for _ in range(count):
        if kind == "pair":
            rows.append({"anchor": draw(fine_texts), "positive": draw(fine_texts)})
        elif kind == "scored":
            score = draw(st.floats(0, 5))
            rows.append(
                {"sentence1": draw(fine_texts), "sentence2": draw(fine_texts), "score": score}
            )
        elif kind == "classification":
            rows.append({"text": draw(fine_texts), "label": draw(labels)})
        elif kind == "multi":
            rows.append({"text": draw(fine_texts), "labels": draw(st.lists(labels, min_size=1))})
        else:
            turns = [("user", draw(fine_texts)), ("assistant", draw(fine_texts))]
            rows.append({"messages": [{"role": r, "content": c} for r, c in turns]})
    if draw(st.booleans()) and kind in ("pair", "scored", "classification"):
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        lines = out.getvalue().splitlines(keepends=True)
    else:
        lines = [json.dumps(row) + "\n" for row in rows]
    if draw(st.integers(0, 3)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(json_lines) + "\n")
    return "".join(lines).encode("utf-8", "surrogatepass")


FILES = {
    "well_formed": well_formed_files(),
    "jsonl": jsonl_files(),
    "csv": csv_files(),
    "parquet": parquet_files(),
    "random": st.binary(max_size=2000),
}


@dataclass
class Outcome:
    """What one file came to: `valid`, `problems` (a report with problems)."""

    kind: str
    report: dict[str, Any]


def check_file(folder: Path, name: str, content: bytes, fmt: str, tokenizer: Any = None) -> Outcome:
    """Validate `content` as an upload would (with `tokenizer` counting tokens) and page
    through its preview; raises (an AssertionError or whatever escaped) where a reader broke
    its contract."""
    path = folder / name
    path.write_bytes(content)
    index = RowIndexBuilder()
    report = read_upload(
        path, fmt, min_rows=1, keep_rows=False, index=index, tokenizer=tokenizer
    ).report
    if fmt != "parquet":
        index.save(path)
    json.dumps(report, allow_nan=False)
    assert report["valid"] == (report["problem_count"] == 0)
    assert sum(report["problems_by_code"].values()) == report["problem_count"]
    assert len(report["problems"]) == min(report["problem_count"], 100)
    for problem in report["problems"]:
        assert isinstance(problem["code"], str) and isinstance(problem["message"], str)
        assert problem["line"] is None or problem["line"] >= 1
        assert str(folder) not in problem["message"]
    in_memory = read_upload(path, fmt, min_rows=1, tokenizer=tokenizer).report
    assert in_memory == report, "the streamed report differs from the one read in memory"
    total = None
    for offset in (0, 3, 10_000):
        page = preview_rows(path, fmt, report, offset=offset, limit=7)
        DatasetRowsPublic.model_validate(page).model_dump_json()
        total = page["total"] if total is None else total
        assert page["total"] == total
    if report["valid"] and fmt != "parquet":
        assert total == report["statistics"]["rows"]
    return Outcome("valid" if report["valid"] else "problems", report)
