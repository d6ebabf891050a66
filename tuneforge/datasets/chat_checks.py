"""The checks of one line of a chat or preference file: its fields, messages, roles and texts.

`datasets.chat` reads the file and calls `supervised_row` or `preference_row` on each line;
these add every problem they find to `Checks` and give the row in its canonical shape (see
`datasets.chat`), or None when the line has a problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tuneforge.datasets import chat_tools
from tuneforge.datasets.problems import Checks, shown
from tuneforge.datasets.problems import type_name as _type_name

Message = dict[str, Any]
Row = dict[str, Any]

SUPERVISED_LAYOUTS: dict[str, tuple[str, ...]] = {
    "chat": ("messages",),
    "prompt_completion": ("prompt", "completion"),
}
PREFERENCE_LAYOUTS: dict[str, tuple[str, ...]] = {
    "preference": ("prompt", "chosen", "rejected"),
    "openai_preference": ("input", "preferred_output", "non_preferred_output"),
}
LAYOUT_NAMES = {
    "chat": "chat (messages)",
    "prompt_completion": "prompt/completion",
    "preference": "preference (prompt, chosen, rejected)",
    "openai_preference": "OpenAI's preference (input, preferred_output, non_preferred_output)",
}

# Optional fields of a supervised row, besides its layout's columns.
SUPERVISED_EXTRAS = ("task_type", "metadata")
TASK_TYPE_MAX_CHARS = 64
METADATA_MAX_KEYS = 32
ROLES = ("system", "user", "assistant", "tool")
# Roles a file may write: `function` is the legacy name of a tool's answer.
FILE_ROLES = (*ROLES, "function")
MESSAGE_KEYS = ("role", "content", "name", "weight", "tool_calls", "tool_call_id")
FILE_MESSAGE_KEYS = (*MESSAGE_KEYS, "function_call")
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


def special_tokens(tokenizer: Any) -> re.Pattern[str]:
    """One pattern for the chat templates' markers and the tokenizer's own special tokens."""
    tokens = set(TEMPLATE_TOKENS)
    if tokenizer is not None:
        tokens |= set(tokenizer.all_special_tokens)
        tokens |= {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    tokens.discard("")
    # Longest first, so that `</s>` is found as itself and not as a part of something longer.
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)))


# A row's check: (record, layout, the layout's columns, checks) -> canonical row or None.
RowCheck = Callable[[dict[str, Any], str, tuple[str, ...], Checks], Row | None]


def _other_layout(record: dict[str, Any], layout: str, checks: Checks) -> bool:
    """Whether the line is written in another chat or preference layout than its file's (one
    problem then names both, rather than one per unknown field)."""
    names = {str(key).strip().lower() for key in record}
    every = SUPERVISED_LAYOUTS | PREFERENCE_LAYOUTS
    if set(every[layout]) <= names:
        return False
    for other, columns in every.items():
        if other != layout and set(columns) <= names:
            why = (
                f"This line is in the {LAYOUT_NAMES[other]} layout, but the file's first line "
                f"made it a {LAYOUT_NAMES[layout]} file; write every line in one layout."
            )
            checks.add("other_layout", why)
            return True
    return False


def _fields(
    record: dict[str, Any], layout: str, wanted: tuple[str, ...], checks: Checks
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


def supervised_row(
    record: dict[str, Any], layout: str, wanted: tuple[str, ...], checks: Checks
) -> Row | None:
    """A line of a `chat` or `prompt_completion` file as `{"messages": […]}` (with its
    `task_type` and `metadata` where given), or None when `checks` got a problem of it."""
    if _other_layout(record, layout, checks):
        return None
    tool_fields = chat_tools.TOOL_FIELDS if layout == "chat" else ()
    fields, ok = _fields(record, layout, wanted + SUPERVISED_EXTRAS + tool_fields, checks)
    extras = _supervised_extras(fields, checks)
    messages: list[Message] | None = None
    tools = chat_tools.check_tools(fields, checks)
    if layout == "chat":
        if "messages" not in fields:
            why = "The line has no 'messages' (nor 'prompt' and 'completion')."
            checks.add("missing_messages", why, "messages")
        else:
            messages = _check_messages(
                fields["messages"],
                "messages",
                checks,
                tools=tools,
                parallel=fields.get("parallel_tool_calls") is not False,
            )
    else:
        prompt = _field_text(fields, "prompt", checks)
        completion = _field_text(fields, "completion", checks)
        if prompt is not None and completion is not None:
            messages = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": completion},
            ]
    if not ok or messages is None or extras is None or tools is None:
        return None
    return {"messages": messages, **({"tools": tools} if tools else {}), **extras}


def _supervised_extras(fields: dict[str, Any], checks: Checks) -> dict[str, Any] | None:
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


def preference_row(
    record: dict[str, Any], layout: str, wanted: tuple[str, ...], checks: Checks
) -> Row | None:
    """A line of a `preference` or `openai_preference` file as `{"prompt", "chosen",
    "rejected"}` messages, or None when `checks` got a problem of it."""
    if _other_layout(record, layout, checks):
        return None
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


def _openai_input(fields: dict[str, Any], checks: Checks) -> list[Message] | None:
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
    messages = _check_messages(
        value["messages"], "input.messages", checks, prompt=True, tools_allowed=False
    )
    return messages if value.keys() == {"messages"} else None


def _openai_output(fields: dict[str, Any], name: str, checks: Checks) -> str | None:
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
    message = _check_message(value[0], f"{name}[0]", checks, tools_allowed=False)
    if message is None:
        return None
    if message["role"] != "assistant":
        why = f"{name}[0] must be an assistant message, got a {message['role']} message."
        checks.add("invalid_output", why, f"{name}[0].role")
        return None
    return str(message["content"])


def _check_messages(
    value: Any,
    column: str,
    checks: Checks,
    *,
    prompt: bool = False,
    tools: list[dict[str, Any]] | None = None,
    parallel: bool = True,
    tools_allowed: bool = True,
) -> list[Message] | None:
    """The checked messages of a conversation (`prompt`: one that a DPO output or a
    reinforcement answer follows; `tools`: the line's declared tools, see `chat_tools`)."""
    if not isinstance(value, list):
        why = f"{column!r} must be a list of messages, got {_type_name(value)}."
        checks.add("messages_not_a_list", why, column)
        return None
    checked = [
        _check_message(m, f"{column}[{i}]", checks, tools_allowed=tools_allowed)
        for i, m in enumerate(value)
    ]
    roles = [m.get("role") if isinstance(m, dict) else None for m in value]
    roles = ["tool" if role == "function" else role for role in roles]
    calls = [bool(m and m.get("tool_calls")) for m in checked]
    # The order is checked only when every role is known: one bad role already says what is wrong.
    known = ROLES if tools_allowed else ROLES[:3]
    order_ok = all(role in known for role in roles) and _check_roles(
        roles, column, checks, prompt=prompt, calls=calls
    )
    messages = [m for m in checked if m is not None]
    if not order_ok or len(messages) != len(value):
        return None
    return chat_tools.check_flow(messages, column, checks, tools or None, parallel)


def _check_message(
    message: Any, column: str, checks: Checks, *, tools_allowed: bool = True
) -> Message | None:
    if not isinstance(message, dict):
        why = f"A message must be an object with 'role' and 'content', got {_type_name(message)}."
        checks.add("message_not_an_object", why, column)
        return None
    # Parquet gives absent fields of a struct as null; a call's content may be null.
    optional = ("name", "weight", "tool_calls", "tool_call_id", "function_call")
    message = {k: v for k, v in message.items() if not (k in optional and v is None)}
    if message.get("content") is None and ("tool_calls" in message or "function_call" in message):
        message.pop("content", None)
    keys = FILE_MESSAGE_KEYS if tools_allowed else MESSAGE_KEYS[:4]
    roles = FILE_ROLES if tools_allowed else ROLES[:3]
    before = len(checks.problems)
    for key in message.keys() - set(keys):
        why = f"{key!r} is not allowed in a message; allowed: {', '.join(keys)}."
        checks.add("unknown_message_key", why, f"{column}.{key}")
    role = message.get("role")
    if "role" not in message:
        checks.add("missing_role", "The message has no 'role'.", column)
    elif role not in roles:
        why = f"Role {shown(role)} is not supported; use {', '.join(roles)}."
        checks.add("unknown_role", why, f"{column}.role")
    calls: list[dict[str, Any]] = []
    if tools_allowed and ("tool_calls" in message or "function_call" in message):
        if role != "assistant":
            why = f"Only assistant messages call tools; this is a {shown(role)} message."
            checks.add("invalid_tool_call", why, f"{column}.tool_calls")
        else:
            calls = chat_tools.check_calls(message, column, checks)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        why = "A tool message needs the 'tool_call_id' (a string) of the call it answers."
        checks.add("invalid_tool_call", why, f"{column}.tool_call_id")
    if "tool_call_id" in message and role != "tool":
        why = f"Only tool messages have a tool_call_id; this is a {shown(role)} message."
        checks.add("invalid_tool_call", why, f"{column}.tool_call_id")
    if role == "function" and not isinstance(message.get("name"), str):
        why = "A function message needs the 'name' of the function whose result it is."
        checks.add("missing_field", why, f"{column}.name")
    if calls and isinstance(message.get("content"), str) and not message["content"].strip():
        del message["content"]
    if "content" not in message:
        if not ("tool_calls" in message or "function_call" in message):
            checks.add("missing_content", "The message has no 'content'.", column)
    else:
        _check_text(message["content"], f"{column}.content", checks)
    weight = message.get("weight")
    if "weight" in message and (
        role != "assistant" or isinstance(weight, bool) or weight not in (0, 1)
    ):
        why = (
            f"'weight' must be 0 or 1, on assistant messages only; got {shown(weight)} on "
            f"{shown(role)}."
        )
        checks.add("invalid_weight", why, f"{column}.weight")
    if "name" in message and not isinstance(message["name"], str):
        why = f"{column}.name must be a string, got {_type_name(message['name'])}."
        checks.add("wrong_type", why, f"{column}.name")
    if len(checks.problems) > before:
        return None
    if "weight" in message:
        message["weight"] = int(weight)
    if calls:
        message["tool_calls"] = calls
        message.setdefault("content", None)
    # (A legacy `function` message keeps its role: `chat_tools.check_flow` finds its call.)
    return {key: message[key] for key in MESSAGE_KEYS if key in message}


def _check_roles(
    roles: list[Any], column: str, checks: Checks, *, prompt: bool, calls: list[bool]
) -> bool:
    """System first if at all; then user and assistant alternate, starting with user, except
    that tool messages may follow an assistant message that calls tools (`calls[i]`), and the
    assistant answers after them. A supervised conversation ends with (and needs) an assistant
    message, a prompt with a user's (or a tool's, for a reinforcement prompt)."""
    ok = prompt or "assistant" in roles
    if not ok:
        why = "The conversation has no assistant message, so nothing to learn from."
        checks.add("no_assistant_message", why, column)
    start = 1 if roles and roles[0] == "system" else 0
    for i in range(start, len(roles)):
        previous = roles[i - 1] if i > start else None
        expected = "user" if previous in (None, "assistant") else "assistant"
        answers_due = previous == "assistant" and calls[i - 1]
        if roles[i] == "tool":
            right = previous == "tool" or answers_due
        else:
            right = roles[i] == expected and not answers_due
        if not right:
            why = (
                "a system message may only come first"
                if roles[i] == "system"
                else f"the tool calls of message {i - 1} are answered by tool messages first"
                if answers_due
                else "a tool message answers the tool calls of the assistant message before it"
                if roles[i] == "tool"
                else f"a {expected} message was expected: after the optional system message, "
                "user and assistant messages alternate, starting with user (tool messages "
                "answer an assistant's tool calls in between)"
            )
            checks.add(
                "role_order", f"Message {i} is a {roles[i]} message; {why}.", f"{column}[{i}]"
            )
            return False
    if prompt and len(roles) == start:
        checks.add("no_user_message", "The prompt has no user message.", column)
        return False
    if ok and roles[-1] not in (("user", "tool") if prompt else ("assistant",)):
        why = (
            "The prompt must end with a user message."
            if prompt
            else "The conversation must end with an assistant message."
        )
        checks.add("role_order", why, f"{column}[{len(roles) - 1}]")
        return False
    return ok


def _field_text(fields: dict[str, Any], name: str, checks: Checks) -> str | None:
    if name not in fields:
        checks.add("missing_field", f"{name!r} is missing.", name)
        return None
    return _check_text(fields[name], name, checks)


def _check_text(value: Any, column: str, checks: Checks) -> str | None:
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
