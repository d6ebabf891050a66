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
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.datasets.readers import Problem, read_records
from tuneforge.datasets.statistics import histogram, summary

Message = dict[str, Any]
Row = dict[str, Any]
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
# Optional fields of a supervised row, besides its layout's columns.
SUPERVISED_EXTRAS = ("task_type", "metadata")
TASK_TYPE_MAX_CHARS = 64
METADATA_MAX_KEYS = 32
ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = ("role", "content", "name", "weight")
# Markers of common chat templates (ChatML, Llama 2 and 3, Mistral, Gemma, Phi, GPT-2). Inside a
# message they would end or switch turns in the middle of a text, in training and in serving.
TEMPLATE_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<s>",
    "</s>",
    "[INST]",
    "[/INST]",
    "<<SYS>>",
    "<</SYS>>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)
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
    return _read(
        path, fmt, SUPERVISED_LAYOUTS, _supervised_row, min_rows, tokenizer, max_seq_length
    )


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
    return _read(
        path, fmt, PREFERENCE_LAYOUTS, _preference_row, min_rows, tokenizer, max_seq_length
    )


@dataclass
class _Checks:
    """Where the problems of a file go, the line being checked, and the tokens no text may hold."""

    problems: list[Problem]
    special: re.Pattern[str]
    line: int = 0

    def add(self, code: str, message: str, column: str | None = None) -> None:
        self.problems.append(Problem(code, message, line=self.line, column=column))


# A row's check: (record, layout, the layout's columns, checks) -> canonical row or None.
RowCheck = Callable[[dict[str, Any], str, tuple[str, ...], _Checks], Row | None]


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
    checks = _Checks(problems, _special_tokens(tokenizer))
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


def _fields(
    record: dict[str, Any], layout: str, wanted: tuple[str, ...], checks: _Checks
) -> tuple[dict[str, Any], bool]:
    """The record's fields by canonical (lower-case) name, and whether it had no unknown ones."""
    fields: dict[str, Any] = {}
    for key, value in record.items():
        name = str(key).strip().lower()
        if name in wanted:
            fields[name] = value
        else:
            why = f"{key!r} is not part of the {layout} layout ({', '.join(wanted)})."
            checks.add("unknown_column", why, str(key))
    return fields, len(fields) == len(record)


def _supervised_row(
    record: dict[str, Any], layout: str, wanted: tuple[str, ...], checks: _Checks
) -> Row | None:
    fields, ok = _fields(record, layout, wanted + SUPERVISED_EXTRAS, checks)
    extras = _supervised_extras(fields, checks)
    messages: list[Message] | None = None
    if layout == "chat":
        if "messages" not in fields:
            why = "The line has no 'messages' (nor 'prompt' and 'completion')."
            checks.add("missing_messages", why, "messages")
        else:
            messages = _check_messages(fields["messages"], "messages", checks)
    else:
        prompt = _field_text(fields, "prompt", checks)
        completion = _field_text(fields, "completion", checks)
        if prompt is not None and completion is not None:
            messages = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": completion},
            ]
    if not ok or messages is None or extras is None:
        return None
    return {"messages": messages, **extras}


def _supervised_extras(fields: dict[str, Any], checks: _Checks) -> dict[str, Any] | None:
    """The row's `task_type` and `metadata` where given; None when one of them is invalid."""
    extras: dict[str, Any] = {}
    problems = len(checks.problems)
    if "task_type" in fields:
        value = fields["task_type"]
        if not isinstance(value, str):
            why = f"task_type must be a string, got {_type_name(value)}."
            checks.add("invalid_task_type", why, "task_type")
        elif not value.strip() or len(value) > TASK_TYPE_MAX_CHARS or "\n" in value:
            lines = value.count("\n") + 1
            why = (
                f"task_type must be 1 to {TASK_TYPE_MAX_CHARS} characters on one line; got "
                f"{len(value.strip())} characters on {lines} line{'s' if lines > 1 else ''}."
            )
            checks.add("invalid_task_type", why, "task_type")
        else:
            extras["task_type"] = value.strip()
    if "metadata" in fields:
        value = fields["metadata"]
        if not isinstance(value, dict):
            why = f"metadata must be an object, got {_type_name(value)}."
            checks.add("invalid_metadata", why, "metadata")
        elif len(value) > METADATA_MAX_KEYS:
            why = f"metadata has {len(value)} keys; at most {METADATA_MAX_KEYS} are allowed."
            checks.add("invalid_metadata", why, "metadata")
        else:
            for key, item in value.items():
                if not (item is None or isinstance(item, str | int | float | bool)):
                    why = (
                        f"metadata.{key} must be a string, number, boolean or null, got "
                        f"{_type_name(item)}."
                    )
                    checks.add("invalid_metadata", why, f"metadata.{key}")
            extras["metadata"] = value
    return extras if len(checks.problems) == problems else None


def _preference_row(
    record: dict[str, Any], layout: str, wanted: tuple[str, ...], checks: _Checks
) -> Row | None:
    fields, ok = _fields(record, layout, wanted, checks)
    prompt: list[Message] | None
    if layout == "preference":
        text = _field_text(fields, "prompt", checks)
        prompt = None if text is None else [{"role": "user", "content": text}]
        chosen = _field_text(fields, "chosen", checks)
        rejected = _field_text(fields, "rejected", checks)
    else:
        prompt = _openai_input(fields, checks)
        chosen = _openai_output(fields, "preferred_output", checks)
        rejected = _openai_output(fields, "non_preferred_output", checks)
    if chosen is not None and chosen == rejected:
        why = "The chosen and the rejected answer are the same; the pair teaches nothing."
        checks.add("identical_outputs", why, wanted[2])
        return None
    if not ok or prompt is None or chosen is None or rejected is None:
        return None
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def _openai_input(fields: dict[str, Any], checks: _Checks) -> list[Message] | None:
    if "input" not in fields:
        checks.add("missing_field", "'input' is missing.", "input")
        return None
    value = fields["input"]
    if not isinstance(value, dict):
        why = f"'input' must be an object with 'messages', got {_type_name(value)}."
        checks.add("wrong_type", why, "input")
        return None
    for key in value.keys() - {"messages"}:
        why = f"'input' may only hold 'messages'; {key!r} is not supported."
        checks.add("unknown_column", why, f"input.{key}")
    if "messages" not in value:
        checks.add("missing_messages", "'input' has no 'messages'.", "input.messages")
        return None
    messages = _check_messages(value["messages"], "input.messages", checks, prompt=True)
    return messages if value.keys() == {"messages"} else None


def _openai_output(fields: dict[str, Any], name: str, checks: _Checks) -> str | None:
    """The content of an output, which must be a list of one assistant message."""
    if name not in fields:
        checks.add("missing_field", f"{name!r} is missing.", name)
        return None
    value = fields[name]
    if not isinstance(value, list) or len(value) != 1:
        got = f"{len(value)} messages" if isinstance(value, list) else _type_name(value)
        why = f"{name!r} must be a list of one assistant message, got {got}."
        checks.add("invalid_output", why, name)
        return None
    message = _check_message(value[0], f"{name}[0]", checks)
    if message is None:
        return None
    if message["role"] != "assistant":
        why = f"{name}[0] must be an assistant message, got a {message['role']} message."
        checks.add("invalid_output", why, f"{name}[0].role")
        return None
    return str(message["content"])


def _check_messages(
    value: Any, column: str, checks: _Checks, *, prompt: bool = False
) -> list[Message] | None:
    """The checked messages of a conversation (`prompt`: one that a DPO output answers)."""
    if not isinstance(value, list):
        why = f"{column!r} must be a list of messages, got {_type_name(value)}."
        checks.add("messages_not_a_list", why, column)
        return None
    checked = [_check_message(m, f"{column}[{i}]", checks) for i, m in enumerate(value)]
    roles = [m.get("role") if isinstance(m, dict) else None for m in value]
    # The order is checked only when every role is known: one bad role already says what is wrong.
    order_ok = all(role in ROLES for role in roles) and _check_roles(
        roles, column, checks, prompt=prompt
    )
    messages = [m for m in checked if m is not None]
    return messages if order_ok and len(messages) == len(value) else None


def _check_message(message: Any, column: str, checks: _Checks) -> Message | None:
    if not isinstance(message, dict):
        why = f"A message must be an object with 'role' and 'content', got {_type_name(message)}."
        checks.add("message_not_an_object", why, column)
        return None
    # Parquet gives absent fields of a struct as null.
    message = {k: v for k, v in message.items() if not (k in ("name", "weight") and v is None)}
    before = len(checks.problems)
    for key in message.keys() - set(MESSAGE_KEYS):
        why = f"{key!r} is not allowed in a message; allowed: {', '.join(MESSAGE_KEYS)}."
        checks.add("unknown_message_key", why, f"{column}.{key}")
    role = message.get("role")
    if "role" not in message:
        checks.add("missing_role", "The message has no 'role'.", column)
    elif role not in ROLES:
        why = f"Role {role!r} is not supported; use {', '.join(ROLES)}."
        checks.add("unknown_role", why, f"{column}.role")
    if "content" not in message:
        checks.add("missing_content", "The message has no 'content'.", column)
    else:
        _check_text(message["content"], f"{column}.content", checks)
    weight = message.get("weight")
    if "weight" in message and (
        role != "assistant" or isinstance(weight, bool) or weight not in (0, 1)
    ):
        why = f"'weight' must be 0 or 1, on assistant messages only; got {weight!r} on {role!r}."
        checks.add("invalid_weight", why, f"{column}.weight")
    if "name" in message and not isinstance(message["name"], str):
        why = f"{column}.name must be a string, got {_type_name(message['name'])}."
        checks.add("wrong_type", why, f"{column}.name")
    if len(checks.problems) > before:
        return None
    if "weight" in message:
        message["weight"] = int(weight)
    return {key: message[key] for key in MESSAGE_KEYS if key in message}


def _check_roles(roles: list[Any], column: str, checks: _Checks, *, prompt: bool) -> bool:
    """System first if at all; then user and assistant alternate, starting with user. A
    supervised conversation ends with (and needs) an assistant message, a prompt with a user's."""
    ok = prompt or "assistant" in roles
    if not ok:
        why = "The conversation has no assistant message, so nothing to learn from."
        checks.add("no_assistant_message", why, column)
    start = 1 if roles and roles[0] == "system" else 0
    for i in range(start, len(roles)):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if roles[i] != expected:
            why = (
                "a system message may only come first"
                if roles[i] == "system"
                else f"a {expected} message was expected: after the optional system message, "
                "user and assistant messages alternate, starting with user"
            )
            checks.add(
                "role_order", f"Message {i} is a {roles[i]} message; {why}.", f"{column}[{i}]"
            )
            return False
    if prompt and len(roles) == start:
        checks.add("no_user_message", "The prompt has no user message.", column)
        return False
    if ok and roles[-1] != ("user" if prompt else "assistant"):
        why = (
            "The prompt must end with a user message."
            if prompt
            else "The conversation must end with an assistant message."
        )
        checks.add("role_order", why, f"{column}[{len(roles) - 1}]")
        return False
    return ok


def _field_text(fields: dict[str, Any], name: str, checks: _Checks) -> str | None:
    if name not in fields:
        checks.add("missing_field", f"{name!r} is missing.", name)
        return None
    return _check_text(fields[name], name, checks)


def _check_text(value: Any, column: str, checks: _Checks) -> str | None:
    if not isinstance(value, str):
        checks.add("wrong_type", f"{column} must be a string, got {_type_name(value)}.", column)
        return None
    if not value.strip():
        checks.add("empty_content", f"{column} is empty.", column)
        return None
    found = sorted(set(checks.special.findall(value)))
    if found:
        why = (
            f"{column} contains {', '.join(found)}: special tokens of chat templates, which "
            "would end or switch turns inside the text."
        )
        checks.add("special_token", why, column)
        return None
    return value


def _type_name(value: Any) -> str:
    """A JSON value's type, in JSON's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names: dict[type, str] = {str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def _as_transformers(tokenizer: Any) -> Any:
    """A transformers tokenizer (or None); a bare `tokenizers.Tokenizer` is wrapped in one."""
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    return tokenizer


def _special_tokens(tokenizer: Any) -> re.Pattern[str]:
    """One pattern for the chat templates' markers and the tokenizer's own special tokens."""
    tokens = set(TEMPLATE_TOKENS)
    if tokenizer is not None:
        tokens |= set(tokenizer.all_special_tokens)
        tokens |= {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    tokens.discard("")
    # Longest first, so that `</s>` is found as itself and not as a part of something longer.
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


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
