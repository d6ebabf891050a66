"""Chat data for supervised fine-tuning and preference data for DPO: layouts, checks, statistics.

| job kind     | layout              | one line of the file                                     |
|--------------|---------------------|----------------------------------------------------------|
| `supervised` | `chat`              | `{"messages": [{"role": "user", "content": "…"}, …]}`    |
| `supervised` | `prompt_completion` | `{"prompt": "…", "completion": "…"}`                     |
| `dpo`        | `preference`        | `{"prompt": "…", "chosen": "…", "rejected": "…"}`        |
| `dpo`        | `openai_preference` | `{"input": {"messages": […]}, "preferred_output": [msg], |
|              |                     | "non_preferred_output": [msg]}` (one assistant message)  |

JSONL is the main format; the flat layouts may also come as CSV or Parquet. Rows come back in
one shape per job kind, the conversational shapes that trl reads:

- supervised: `{"messages": [{"role": …, "content": …}, …]}`; a message keeps `name` and
  `weight` (0 or 1, assistant messages only) when the file gives them, and `tool_calls` or
  `tool_call_id` (see `datasets.chat_tools`, which also gives the row its `tools`); the row
  keeps the optional `task_type` (a short label such as `"hashtags"`, 1 to 64 characters, one
  line) and
  `metadata` (an object of at most 32 keys whose values are strings, numbers, booleans or
  null) of either supervised layout. Training reads only the messages; the task type names
  the row's task in data preparation's statistics;
- dpo: `{"prompt": [messages ending with a user message], "chosen": [one assistant message],
  "rejected": [one assistant message]}`.

The checks follow OpenAI's checks of fine-tuning data: every problem comes with its line, the
place in the line (`column`, e.g. `messages[2].content`) and a stable code; nothing is cut or
dropped in silence. Codes besides the readers' (`invalid_json`, `not_an_object`, …):
`missing_messages`, `messages_not_a_list`, `message_not_an_object`, `missing_role`,
`missing_content`, `unknown_role`, `unknown_message_key`, `invalid_weight`, `wrong_type`,
`invalid_task_type`, `invalid_metadata`, `empty_content`, `special_token`,
`no_assistant_message`, `no_user_message`, `role_order`, `unknown_column`, `missing_field`,
`invalid_output`, `identical_outputs`, `other_layout` (a line in another layout than its
file's), `too_long`, `chat_template_error`, `too_few_rows`, `empty_file`, and those of tools
(`datasets.chat_tools`).

This module reads a file and measures it; the checks of each line are in
`datasets.chat_checks`.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.datasets.chat_checks import (
    PREFERENCE_LAYOUTS,
    ROLES,
    SUPERVISED_LAYOUTS,
    Checks,
    Message,
    Row,
    RowCheck,
    preference_row,
    special_tokens,
    supervised_row,
)
from tuneforge.datasets.chat_render import chat_text, message_text
from tuneforge.datasets.problems import Problem, ProblemLog
from tuneforge.datasets.readers import IndexSink, RecordStream, first_record
from tuneforge.datasets.statistics import DuplicateCounter, histogram, lengths_array, summary

# The line, the sequences the model reads, the texts the loss is computed on, the tools.
Example = tuple[int, list[list[Message]], list[str], list[Any] | None]

# Examples measured in one go (one tokenizer call for their texts).
MEASURE_BATCH = 512


@dataclass
class ChatData:
    """A read file: its layout, its rows (the canonical shape above) and its report."""

    layout: str | None
    rows: list[Row]
    report: dict[str, Any]

    @property
    def valid(self) -> bool:
        return bool(self.report["valid"])


def read_chat_file(
    path: Path,
    fmt: str,
    *,
    min_rows: int,
    tokenizer: Any = None,
    max_seq_length: int | None = None,
    keep_rows: bool = True,
    index: IndexSink | None = None,
) -> ChatData:
    """Read and check a supervised fine-tuning file (layout `chat` or `prompt_completion`);
    every problem is reported, none raised, and rows come back only when the file is valid.

    `tokenizer` is a transformers tokenizer (or the bare `tokenizers.Tokenizer` that
    `load_tokenizer` gives). With it the statistics count tokens, its own special tokens count
    as misplaced inside texts, and examples longer than `max_seq_length` tokens are `too_long`
    problems. Without it lengths are in characters only and `max_seq_length` is not checked.

    The file streams through: `keep_rows=False` (an upload's validation) keeps no row, only
    the statistics' few numbers per row; `index` learns where each record starts.
    """
    return _read(
        path,
        fmt,
        SUPERVISED_LAYOUTS,
        supervised_row,
        min_rows,
        tokenizer,
        max_seq_length,
        keep_rows,
        index,
    )


def read_preference_file(
    path: Path,
    fmt: str,
    *,
    min_rows: int,
    tokenizer: Any = None,
    max_seq_length: int | None = None,
    keep_rows: bool = True,
    index: IndexSink | None = None,
) -> ChatData:
    """Read and check a DPO file (layout `preference` or `openai_preference`), like
    `read_chat_file`. An example is too long when prompt plus chosen, or prompt plus rejected,
    is longer than `max_seq_length` tokens."""
    return _read(
        path,
        fmt,
        PREFERENCE_LAYOUTS,
        preference_row,
        min_rows,
        tokenizer,
        max_seq_length,
        keep_rows,
        index,
    )


def _read(
    path: Path,
    fmt: str,
    layouts: dict[str, tuple[str, ...]],
    check_row: RowCheck,
    min_rows: int,
    tokenizer: Any,
    max_seq_length: int | None,
    keep_rows: bool = True,
    index: IndexSink | None = None,
) -> ChatData:
    known = {c for cols in layouts.values() for c in cols}
    problems = ProblemLog()
    layout = _pick_layout(RecordStream(path, fmt, ProblemLog(), known), layouts)
    tokenizer = _as_transformers(tokenizer)
    checks = Checks(problems, special_tokens(tokenizer))
    tally = _Tally(tokenizer, max_seq_length, problems)
    rows: list[Row] = []
    records = 0
    stream = RecordStream(path, fmt, problems, known, index=index)
    for line, record in stream:
        records += 1
        checks.line = line
        row = check_row(record, layout, layouts[layout], checks)
        if row is not None:
            tally.add(line, row)
            if keep_rows:
                rows.append(row)
    if not records and not problems:
        problems.append(Problem("empty_file", "The file has no rows."))
    elif records and records < min_rows:
        message = f"The file has {records} rows; at least {min_rows} are needed."
        problems.append(Problem("too_few_rows", message))
    statistics = tally.statistics()
    found = layout if records else None
    report = _report(fmt, found, layouts, stream.has_header, problems, statistics)
    return ChatData(found, rows if not problems else [], report)


def _pick_layout(stream: RecordStream, layouts: dict[str, tuple[str, ...]]) -> str:
    """The layout of the first record naming one of a layout's columns; else the first layout,
    so that a file naming none still gets every line's problems."""
    every = {c for columns in layouts.values() for c in columns}
    found = first_record(stream, lambda r: bool({str(k).strip().lower() for k in r} & every))
    if found is not None:
        names = {str(key).strip().lower() for key in found[1]}
        for layout, columns in layouts.items():
            if names & set(columns):
                return layout
    return next(iter(layouts))


def _as_transformers(tokenizer: Any) -> Any:
    """A transformers tokenizer (or None); a bare `tokenizers.Tokenizer` is wrapped in one."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    return tokenizer


def _sequences(row: Row) -> tuple[list[list[Message]], list[str]]:
    """The sequences the model reads for a canonical row, and the texts it is trained on."""
    if "messages" in row:
        trained = [
            message_text(m)
            for m in row["messages"]
            if m["role"] == "assistant" and m.get("weight", 1) == 1
        ]
        return [row["messages"]], trained
    return (
        [row["prompt"] + row["chosen"], row["prompt"] + row["rejected"]],
        [row["chosen"][0]["content"], row["rejected"][0]["content"]],
    )


class _Tally:
    """What the report says of the valid rows, kept as they stream by: counts, duplicates (by
    digest), and lengths per example in compact arrays. Examples are measured (and their
    `too_long` and `chat_template_error` problems logged) MEASURE_BATCH at a time.

    Lengths are in characters (of the contents) and, with a tokenizer, in tokens. Per example:
    the longest sequence the model reads (the conversation; for DPO the longer of prompt +
    chosen and prompt + rejected). Per epoch: all sequences together, and the part the loss is
    computed on (assistant contents with weight 1; DPO: chosen and rejected).

    Tokens of a sequence are those of the tokenizer's chat template when it has one, else the
    sum of the contents' tokens. Trained tokens are an approximation: each trained content is
    tokenized alone, so the template's end-of-turn token that the loss also sees is not
    counted (`apply_chat_template`'s assistant mask needs `{% generation %}` markers most
    templates lack)."""

    def __init__(self, tokenizer: Any, max_seq_length: int | None, problems: ProblemLog):
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.problems = problems
        self.rows = 0
        self.duplicates = DuplicateCounter()
        self.messages = array("i")
        # (`tool` counted only in files that have tool messages)
        self.roles = dict.fromkeys(ROLES[:3], 0)
        # (longest sequence per example, total, trained total) in chars and in tokens
        self.chars: tuple[array, list[int]] = (array("q"), [0, 0])
        self.tokens: tuple[array, list[int]] = (array("q"), [0, 0])
        self._pending: list[Example] = []

    def add(self, line: int, row: Row) -> None:
        """Count a valid row (for preference rows a conversation is prompt plus chosen)."""
        conversation = row.get("messages") or row["prompt"] + row["chosen"]
        self.rows += 1
        self.duplicates.add(json.dumps(row, sort_keys=True))
        self.messages.append(len(conversation))
        for message in conversation:
            if message["role"] in ROLES:
                self.roles[message["role"]] = self.roles.get(message["role"], 0) + 1
        self._pending.append((line, *_sequences(row), row.get("tools")))
        if len(self._pending) >= MEASURE_BATCH:
            self._measure()

    def _measure(self) -> None:
        examples, self._pending = self._pending, []
        for _, seqs, texts, _ in examples:
            lengths = [sum(len(message_text(m)) for m in seq) for seq in seqs]
            _add_lengths(self.chars, lengths, sum(map(len, texts)))
        if self.tokenizer is None or not examples:
            return
        sequences = _sequence_tokens(examples, self.tokenizer, self.problems)
        trained = iter(
            _token_counts([t for _, _, texts, _ in examples for t in texts], self.tokenizer)
        )
        for (line, _, texts, _), tokens in zip(examples, sequences, strict=True):
            trained_tokens = sum(next(trained) for _ in texts)
            if tokens is None:
                continue
            _add_lengths(self.tokens, tokens, trained_tokens)
            if self.max_seq_length is not None and max(tokens) > self.max_seq_length:
                self.problems.append(
                    Problem(
                        "too_long",
                        f"The example is {max(tokens)} tokens long, more than max_seq_length "
                        f"{self.max_seq_length}; it is not cut. Shorten or split it, or raise "
                        "max_seq_length.",
                        line=line,
                    )
                )

    def statistics(self) -> dict[str, Any]:
        self._measure()
        statistics: dict[str, Any] = {
            "rows": self.rows,
            "exact_duplicates": self.duplicates.count(),
            "messages_per_example": summary(lengths_array(self.messages)),
            "role_counts": self.roles,
            "chars": _lengths(self.chars),
            "histogram": histogram(lengths_array(self.chars[0]), "chars"),
        }
        if self.tokenizer is not None:
            statistics["tokens"] = _lengths(self.tokens)
            statistics["histogram"] = histogram(lengths_array(self.tokens[0]), "tokens")
        return statistics


def _add_lengths(into: tuple[array, list[int]], lengths: list[int], trained: int) -> None:
    if lengths:
        into[0].append(max(lengths))
    into[1][0] += sum(lengths)
    into[1][1] += trained


def _sequence_tokens(
    examples: list[Example], tokenizer: Any, problems: ProblemLog
) -> list[list[int] | None]:
    """Tokens of each example's sequences; None where the chat template rejects it."""
    if tokenizer.chat_template is None:
        contents = [message_text(m) for _, seqs, _, _ in examples for seq in seqs for m in seq]
        counts = iter(_token_counts(contents, tokenizer))
        return [[sum(next(counts) for _ in seq) for seq in seqs] for _, seqs, _, _ in examples]
    from jinja2 import TemplateError

    rendered: list[list[str] | None] = []
    for line, seqs, _, tools in examples:
        try:
            rendered.append([chat_text(tokenizer, seq, tools) for seq in seqs])
        except TemplateError as exc:
            problems.append(
                Problem(
                    "chat_template_error",
                    f"The model's chat template rejects this example: {exc}",
                    line=line,
                )
            )
            rendered.append(None)
    counts = iter(_token_counts([t for texts in rendered if texts for t in texts], tokenizer))
    return [None if texts is None else [next(counts) for _ in texts] for texts in rendered]


def _token_counts(texts: list[str], tokenizer: Any) -> list[int]:
    if not texts:
        return []
    # The chat template writes its own begin and end tokens; contents get none.
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [len(ids) for ids in encoded]


def _lengths(tally: tuple[array, list[int]]) -> dict[str, Any]:
    longest, (total, trained_total) = tally
    return {
        "per_example": summary(lengths_array(longest)),
        "per_epoch": total,
        "trained_per_epoch": trained_total,
        "trained_share": round(trained_total / total, 4) if total else None,
    }


def _report(
    fmt: str,
    layout: str | None,
    layouts: dict[str, tuple[str, ...]],
    has_header: bool,
    problems: ProblemLog,
    statistics: dict[str, Any],
) -> dict[str, Any]:
    """The validation report, in the shape of the embedding files' report."""
    return {
        "valid": not problems,
        "format": fmt,
        "layout": layout,
        "columns": list(layouts[layout]) if layout else [],
        "has_header": has_header,
        **problems.report_fields(),
        "statistics": statistics,
    }
