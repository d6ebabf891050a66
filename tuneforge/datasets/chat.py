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
  `weight` (0 or 1, assistant messages only) when the file gives them; the row keeps the
  optional `task_type` (a short label such as `"hashtags"`, 1 to 64 characters, one line) and
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
`invalid_output`, `identical_outputs`, `too_long`, `chat_template_error`, `too_few_rows`,
`empty_file`.

This module reads a file and measures it; the checks of each line are in
`datasets.chat_checks`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.datasets.chat_checks import (
    ROLES,
    Checks,
    Message,
    Row,
    RowCheck,
    preference_row,
    special_tokens,
    supervised_row,
)
from tuneforge.datasets.readers import Problem, read_records
from tuneforge.datasets.statistics import histogram, summary

# The line, the sequences the model reads and the texts the loss is computed on.
Example = tuple[int, list[list[Message]], list[str]]

SUPERVISED_LAYOUTS: dict[str, tuple[str, ...]] = {
    "chat": ("messages",),
    "prompt_completion": ("prompt", "completion"),
}
PREFERENCE_LAYOUTS: dict[str, tuple[str, ...]] = {
    "preference": ("prompt", "chosen", "rejected"),
    "openai_preference": ("input", "preferred_output", "non_preferred_output"),
}
MAX_REPORTED_PROBLEMS = 100


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
) -> ChatData:
    """Read and check a supervised fine-tuning file (layout `chat` or `prompt_completion`);
    every problem is reported, none raised, and rows come back only when the file is valid.

    `tokenizer` is a transformers tokenizer (or the bare `tokenizers.Tokenizer` that
    `load_tokenizer` gives). With it the statistics count tokens, its own special tokens count
    as misplaced inside texts, and examples longer than `max_seq_length` tokens are `too_long`
    problems. Without it lengths are in characters only and `max_seq_length` is not checked.
    """
    return _read(path, fmt, SUPERVISED_LAYOUTS, supervised_row, min_rows, tokenizer, max_seq_length)


def read_preference_file(
    path: Path,
    fmt: str,
    *,
    min_rows: int,
    tokenizer: Any = None,
    max_seq_length: int | None = None,
) -> ChatData:
    """Read and check a DPO file (layout `preference` or `openai_preference`), like
    `read_chat_file`. An example is too long when prompt plus chosen, or prompt plus rejected,
    is longer than `max_seq_length` tokens."""
    return _read(path, fmt, PREFERENCE_LAYOUTS, preference_row, min_rows, tokenizer, max_seq_length)


def _read(
    path: Path,
    fmt: str,
    layouts: dict[str, tuple[str, ...]],
    check_row: RowCheck,
    min_rows: int,
    tokenizer: Any,
    max_seq_length: int | None,
) -> ChatData:
    raw = read_records(path, fmt, {c for cols in layouts.values() for c in cols}, {})
    problems = list(raw.problems)
    layout = _pick_layout(raw.records, layouts)
    tokenizer = _as_transformers(tokenizer)
    checks = Checks(problems, special_tokens(tokenizer))
    examples: list[Example] = []
    rows: list[Row] = []
    for line, record in raw.records:
        checks.line = line
        row = check_row(record, layout, layouts[layout], checks)
        if row is not None:
            rows.append(row)
            examples.append((line, *_sequences(row)))
    if not raw.records and not problems:
        problems.append(Problem("empty_file", "The file has no rows."))
    elif raw.records and len(raw.records) < min_rows:
        message = f"The file has {len(raw.records)} rows; at least {min_rows} are needed."
        problems.append(Problem("too_few_rows", message))
    statistics = _row_statistics(rows) | _length_statistics(
        examples, tokenizer, max_seq_length, problems
    )
    found = layout if raw.records else None
    report = _report(fmt, found, layouts, raw.has_header, problems, statistics)
    return ChatData(found, rows if not problems else [], report)


def _pick_layout(
    records: list[tuple[int, dict[str, Any]]], layouts: dict[str, tuple[str, ...]]
) -> str:
    """The layout of the first record naming one of a layout's columns; else the first layout,
    so that a file naming none still gets every line's problems."""
    for _, record in records:
        names = {str(key).strip().lower() for key in record}
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
            m["content"]
            for m in row["messages"]
            if m["role"] == "assistant" and m.get("weight", 1) == 1
        ]
        return [row["messages"]], trained
    return (
        [row["prompt"] + row["chosen"], row["prompt"] + row["rejected"]],
        [row["chosen"][0]["content"], row["rejected"][0]["content"]],
    )


def _row_statistics(rows: list[Row]) -> dict[str, Any]:
    """Counts over the valid rows; for preference rows a conversation is prompt plus chosen."""
    conversations = [row.get("messages") or row["prompt"] + row["chosen"] for row in rows]
    seen: set[str] = set()
    duplicates = 0
    for row in rows:
        key = json.dumps(row, sort_keys=True)
        duplicates += key in seen
        seen.add(key)
    return {
        "rows": len(rows),
        "exact_duplicates": duplicates,
        "messages_per_example": summary([len(c) for c in conversations]),
        "role_counts": {
            role: sum(m["role"] == role for c in conversations for m in c) for role in ROLES
        },
    }


def _length_statistics(
    examples: list[Example], tokenizer: Any, max_seq_length: int | None, problems: list[Problem]
) -> dict[str, Any]:
    """Lengths in characters (of the contents) and, with a tokenizer, in tokens; adds the
    `too_long` and `chat_template_error` problems.

    Per example: the longest sequence the model reads (the conversation; for DPO the longer of
    prompt + chosen and prompt + rejected). Per epoch: all sequences together, and the part the
    loss is computed on (assistant contents with weight 1; DPO: chosen and rejected).

    Tokens of a sequence are those of the tokenizer's chat template when it has one, else the
    sum of the contents' tokens. Trained tokens are an approximation: each trained content is
    tokenized alone, so the template's end-of-turn token that the loss also sees is not counted
    (`apply_chat_template`'s assistant mask needs `{% generation %}` markers most templates lack).
    """
    chars = [[sum(len(m["content"]) for m in seq) for seq in seqs] for _, seqs, _ in examples]
    statistics: dict[str, Any] = {
        "chars": _lengths(chars, [sum(map(len, texts)) for _, _, texts in examples])
    }
    # The longest sequence of each example, as the dashboard's length histogram.
    statistics["histogram"] = histogram([max(c) for c in chars if c], "chars")
    if tokenizer is None:
        return statistics
    sequences = _sequence_tokens(examples, tokenizer, problems)
    trained = iter(_token_counts([t for _, _, texts in examples for t in texts], tokenizer))
    measured: list[list[int]] = []
    trained_per_example: list[int] = []
    for (line, _, texts), tokens in zip(examples, sequences, strict=True):
        trained_tokens = sum(next(trained) for _ in texts)
        if tokens is None:
            continue
        measured.append(tokens)
        trained_per_example.append(trained_tokens)
        if max_seq_length is not None and max(tokens) > max_seq_length:
            problems.append(
                Problem(
                    "too_long",
                    f"The example is {max(tokens)} tokens long, more than max_seq_length "
                    f"{max_seq_length}; it is not cut. Shorten or split it, or raise "
                    "max_seq_length.",
                    line=line,
                )
            )
    statistics["tokens"] = _lengths(measured, trained_per_example)
    statistics["histogram"] = histogram([max(t) for t in measured if t], "tokens")
    return statistics


def _sequence_tokens(
    examples: list[Example], tokenizer: Any, problems: list[Problem]
) -> list[list[int] | None]:
    """Tokens of each example's sequences; None where the chat template rejects it."""
    if tokenizer.chat_template is None:
        contents = [m["content"] for _, seqs, _ in examples for seq in seqs for m in seq]
        counts = iter(_token_counts(contents, tokenizer))
        return [[sum(next(counts) for _ in seq) for seq in seqs] for _, seqs, _ in examples]
    from jinja2 import TemplateError

    rendered: list[list[str] | None] = []
    for line, seqs, _ in examples:
        try:
            rendered.append([tokenizer.apply_chat_template(seq, tokenize=False) for seq in seqs])
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


def _lengths(per_sequence: list[list[int]], trained: list[int]) -> dict[str, Any]:
    total = sum(sum(lengths) for lengths in per_sequence)
    trained_total = sum(trained)
    return {
        "per_example": summary([max(lengths) for lengths in per_sequence]),
        "per_epoch": total,
        "trained_per_epoch": trained_total,
        "trained_share": round(trained_total / total, 4) if total else None,
    }


def _report(
    fmt: str,
    layout: str | None,
    layouts: dict[str, tuple[str, ...]],
    has_header: bool,
    problems: list[Problem],
    statistics: dict[str, Any],
) -> dict[str, Any]:
    """The validation report, in the shape of the embedding files' report."""
    by_code: dict[str, int] = {}
    for problem in problems:
        by_code[problem.code] = by_code.get(problem.code, 0) + 1
    problems_sorted = sorted(problems, key=lambda p: (p.line or 0, p.column or ""))
    return {
        "valid": not problems,
        "format": fmt,
        "layout": layout,
        "columns": list(layouts[layout]) if layout else [],
        "has_header": has_header,
        "problem_count": len(problems),
        "problems_by_code": by_code,
        "problems": [p.to_dict() for p in problems_sorted[:MAX_REPORTED_PROBLEMS]],
        "statistics": statistics,
    }
