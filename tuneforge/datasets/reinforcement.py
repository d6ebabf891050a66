"""Reinforcement fine-tuning data: prompts, and what the grader needs to score their answers.

| layout          | one line of the file                                                |
|-----------------|---------------------------------------------------------------------|
| `reinforcement` | `{"messages": [developer/system?, user, …, user], "FIELD": …, …}`   |

OpenAI's format: `messages` is the prompt (no final answer: it ends with a user message) and
every other field is there for the grader, which reads the whole line as `{{item.…}}`
(`{{item.reference_answer}}`, `{{item.meta.keys[0]}}`). A `developer` message is read as a
system message (chat templates know no developer role).

The prompt may use tools as chat data does (see `datasets.chat_tools`): top-level `tools`
(or legacy `functions`), assistant `tool_calls` and `tool` answers, and it may end with a
tool's answer. The prompt is then rendered with its tools (`datasets.chat_render`), and a
grader's `{{sample.output_tools}}` gets the calls read back from the model's answer.

Rows come back as `{"messages": [the prompt], "item": {the line as given}}`, with `"tools"`
when the line declares tools. Besides the chat
checks of the prompt (see `datasets.chat_checks`), each line is checked against the grader:
a line without a field one of the grader's templates names is a `missing_reference` problem,
with the field as its column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.datasets import chat_tools
from tuneforge.datasets.chat import ChatData, _read
from tuneforge.datasets.chat_checks import Checks, Row, _check_messages
from tuneforge.datasets.readers import IndexSink
from tuneforge.graders.spec import templates
from tuneforge.graders.templates import MissingReference, references, resolve

LAYOUTS: dict[str, tuple[str, ...]] = {"reinforcement": ("messages",)}


def read_reinforcement_file(
    path: Path,
    fmt: str,
    *,
    min_rows: int,
    grader: Any = None,
    grader_param: str = "grader",
    tokenizer: Any = None,
    max_seq_length: int | None = None,
    keep_rows: bool = True,
    index: IndexSink | None = None,
) -> ChatData:
    """Read and check a reinforcement file like `chat.read_chat_file`; with `grader` (a parsed
    grader, its field called `grader_param`), every line must have the fields the grader's
    templates name. `max_seq_length` bounds the prompt's tokens."""
    item_references = [
        (path_, reference)
        for path_, template in (templates(grader, grader_param) if grader is not None else [])
        for reference in references(template, path_)
        if reference.namespace == "item"
    ]

    def check_row(
        record: dict[str, Any], layout: str, wanted: tuple[str, ...], checks: Checks
    ) -> Row | None:
        ok = True
        for where, reference in item_references:
            try:
                resolve(reference, None, record, where)
            except MissingReference as error:
                column = reference.text.removeprefix("item").lstrip(".")
                checks.add("missing_reference", error.message, column)
                ok = False
        if "messages" not in record:
            why = "The line has no 'messages' (the prompt to answer)."
            checks.add("missing_messages", why, "messages")
            return None
        prompt = _as_system(record["messages"])
        fields = {k: v for k, v in record.items() if k in chat_tools.TOOL_FIELDS}
        tools = chat_tools.check_tools(fields, checks)
        messages = _check_messages(
            prompt,
            "messages",
            checks,
            prompt=True,
            tools=tools,
            parallel=fields.get("parallel_tool_calls") is not False,
        )
        if messages is None or tools is None or not ok:
            return None
        return {"messages": messages, "item": record, **({"tools": tools} if tools else {})}

    return _read(
        path, fmt, LAYOUTS, check_row, min_rows, tokenizer, max_seq_length, keep_rows, index
    )


def _as_system(messages: Any) -> Any:
    """The messages with `developer` roles read as `system` (anything else left to the
    checks)."""
    if not isinstance(messages, list):
        return messages
    return [
        {**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m
        for m in messages
    ]
