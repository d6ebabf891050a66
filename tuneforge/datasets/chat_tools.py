"""The checks of function calling in chat data, as OpenAI's fine-tuning format writes it.

A line may declare its tools at the top level, `tools` (`[{"type": "function", "function":
{"name", "description", "parameters"}}]`) or the legacy `functions` (`[{"name", …}]`);
assistant messages may call them, `tool_calls` (`[{"id", "type": "function", "function":
{"name", "arguments": "<JSON object as a string>"}}]`, content then optional) or the legacy
`function_call` (`{"name", "arguments"}`); `tool` messages answer a call by its
`tool_call_id` (legacy: `function` messages by the function's `name`).

Checked, each with its line and column: the tools' shape (a function name of 1 to 64 letters,
digits, `_` or `-`, unique; `parameters` a JSON Schema object whose `required` names its
`properties`); each call's shape, its arguments a string holding a JSON object with the
parameters the tool requires, its name one the line declares; a tool message answers a call
of the assistant message just before it, once; a call that the conversation goes on after is
answered. `parallel_tool_calls: false` allows one call per message.

Rows keep the modern shape only: `functions` become `tools`, a `function_call` a one-call
`tool_calls` (its id `call_<message index>`), a `function` message a `tool` message answering
that call. Codes: `invalid_tools`, `invalid_tool_call`, `invalid_tool_arguments`,
`undeclared_tool`, `unknown_tool_call_id`, `unanswered_tool_call`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tuneforge.datasets.problems import Checks
from tuneforge.datasets.problems import type_name as _kind

Message = dict[str, Any]

# The fields of a chat line that declare its tools.
TOOL_FIELDS = ("tools", "functions", "parallel_tool_calls")
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FUNCTION_KEYS = ("name", "description", "parameters", "strict")



def check_tools(fields: dict[str, Any], checks: Checks) -> list[dict[str, Any]] | None:
    """The line's declared tools in the modern shape ([] when it declares none), or None when
    they have a problem (added to `checks`)."""
    before = len(checks.problems)
    if "tools" in fields and "functions" in fields:
        why = "Give 'tools' or the legacy 'functions', not both."
        checks.add("invalid_tools", why, "functions")
        return None
    if "parallel_tool_calls" in fields and not isinstance(fields["parallel_tool_calls"], bool):
        got = _kind(fields["parallel_tool_calls"])
        why = f"parallel_tool_calls must be true or false, got {got}."
        checks.add("invalid_tools", why, "parallel_tool_calls")
    name = "tools" if "tools" in fields else "functions" if "functions" in fields else None
    if name is None:
        return [] if len(checks.problems) == before else None
    value = fields[name]
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else _kind(value)
        checks.add("invalid_tools", f"{name} must be a non-empty list, got {got}.", name)
        return None
    tools: list[dict[str, Any]] = []
    for i, entry in enumerate(value):
        column = f"{name}[{i}]"
        if name == "tools":
            if not isinstance(entry, dict) or entry.get("type") != "function":
                why = 'A tool must be an object {"type": "function", "function": {…}}.'
                checks.add("invalid_tools", why, column)
                continue
            for key in entry.keys() - {"type", "function"}:
                checks.add("invalid_tools", f"{key!r} is not part of a tool.", f"{column}.{key}")
            entry, column = entry.get("function"), f"{column}.function"
        function = _check_function(entry, column, checks)
        if function is not None:
            tools.append({"type": "function", "function": function})
    names = [t["function"]["name"] for t in tools]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        why = f"Two tools are called {dup!r}; names must be unique."
        checks.add("invalid_tools", why, name)
    return tools if len(checks.problems) == before else None


def _check_function(entry: Any, column: str, checks: Checks) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        why = f"A function must be an object with a 'name', got {_kind(entry)}."
        checks.add("invalid_tools", why, column)
        return None
    before = len(checks.problems)
    for key in entry.keys() - set(FUNCTION_KEYS):
        why = f"{key!r} is not part of a function; allowed: {', '.join(FUNCTION_KEYS)}."
        checks.add("invalid_tools", why, f"{column}.{key}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        why = f"A function's name must be 1 to 64 letters, digits, _ or -; got {name!r}."
        checks.add("invalid_tools", why, f"{column}.name")
    if "description" in entry and not isinstance(entry["description"], str):
        checks.add("invalid_tools", "description must be a string.", f"{column}.description")
    if "strict" in entry and not isinstance(entry["strict"], bool):
        checks.add("invalid_tools", "strict must be true or false.", f"{column}.strict")
    if "parameters" in entry:
        _check_schema(entry["parameters"], f"{column}.parameters", checks)
    if len(checks.problems) > before:
        return None
    return {key: entry[key] for key in FUNCTION_KEYS if key in entry}


def _check_schema(schema: Any, column: str, checks: Checks) -> None:
    """A function's parameters: a JSON Schema of an object, as OpenAI requires."""
    if not isinstance(schema, dict):
        why = f"parameters must be a JSON Schema object, got {_kind(schema)}."
        checks.add("invalid_tools", why, column)
        return
    if schema.get("type", "object") != "object":
        why = f"parameters must describe an object (type 'object'), got {schema.get('type')!r}."
        checks.add("invalid_tools", why, f"{column}.type")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        checks.add("invalid_tools", "properties must be an object.", f"{column}.properties")
        return
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        checks.add("invalid_tools", "required must be a list of names.", f"{column}.required")
        return
    for missing in [r for r in required if r not in properties]:
        why = f"required names {missing!r}, which properties does not describe."
        checks.add("invalid_tools", why, f"{column}.required")


def check_calls(message: dict[str, Any], column: str, checks: Checks) -> list[dict[str, Any]]:
    """An assistant message's calls (`tool_calls`, or the legacy `function_call` as one call),
    in the modern shape; their problems go to `checks`."""
    if "tool_calls" in message and "function_call" in message:
        why = "Give 'tool_calls' or the legacy 'function_call', not both."
        checks.add("invalid_tool_call", why, f"{column}.function_call")
        return []
    if "function_call" in message:
        call = _check_call_function(message["function_call"], f"{column}.function_call", checks)
        index = column.rsplit("[", 1)[-1].rstrip("]")
        if call is None:
            return []
        return [{"id": f"call_{index}", "type": "function", "function": call}]
    value = message.get("tool_calls")
    if not isinstance(value, list) or not value:
        got = "an empty list" if value == [] else _kind(value)
        why = f"tool_calls must be a non-empty list of calls, got {got}."
        checks.add("invalid_tool_call", why, f"{column}.tool_calls")
        return []
    calls = []
    for i, call in enumerate(value):
        where = f"{column}.tool_calls[{i}]"
        if not isinstance(call, dict):
            why = (
                'A call must be an object {"id", "type": "function", "function"}, got '
                f"{_kind(call)}."
            )
            checks.add("invalid_tool_call", why, where)
            continue
        for key in call.keys() - {"id", "type", "function"}:
            checks.add("invalid_tool_call", f"{key!r} is not part of a call.", f"{where}.{key}")
        if not isinstance(call.get("id"), str) or not call["id"].strip():
            checks.add("invalid_tool_call", "A call needs an 'id' (a string).", f"{where}.id")
        if call.get("type", "function") != "function":
            why = f"A call's type must be 'function', got {call.get('type')!r}."
            checks.add("invalid_tool_call", why, f"{where}.type")
        function = _check_call_function(call.get("function"), f"{where}.function", checks)
        if function is not None and isinstance(call.get("id"), str):
            calls.append({"id": call["id"], "type": "function", "function": function})
    ids = [c["id"] for c in calls]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        checks.add("invalid_tool_call", f"Two calls have the id {dup!r}.", f"{column}.tool_calls")
    return calls


def _check_call_function(value: Any, column: str, checks: Checks) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        why = f'A call\'s function must be an object {{"name", "arguments"}}, got {_kind(value)}.'
        checks.add("invalid_tool_call", why, column)
        return None
    before = len(checks.problems)
    for key in value.keys() - {"name", "arguments"}:
        checks.add("invalid_tool_call", f"{key!r} is not part of a call.", f"{column}.{key}")
    if not isinstance(value.get("name"), str) or not NAME.match(value["name"]):
        why = (
            "The called function's name must be 1 to 64 letters, digits, _ or -; got "
            f"{value.get('name')!r}."
        )
        checks.add("invalid_tool_call", why, f"{column}.name")
    arguments = value.get("arguments")
    if not isinstance(arguments, str):
        why = (
            "arguments must be a string holding a JSON object (as the model writes it), got "
            f"{_kind(arguments)}."
        )
        checks.add("invalid_tool_arguments", why, f"{column}.arguments")
    else:
        try:
            parsed = json.loads(arguments)
        except ValueError as exc:
            why = f"arguments is not valid JSON: {exc}."
            checks.add("invalid_tool_arguments", why, f"{column}.arguments")
        else:
            if not isinstance(parsed, dict):
                why = f"arguments must hold a JSON object, got {_kind(parsed)}."
                checks.add("invalid_tool_arguments", why, f"{column}.arguments")
        found = sorted(set(checks.special.findall(arguments)))
        if found:
            why = f"arguments contains {', '.join(found)}: special tokens of chat templates."
            checks.add("special_token", why, f"{column}.arguments")
    if len(checks.problems) > before:
        return None
    return {"name": value["name"], "arguments": arguments}


def check_flow(
    messages: list[Message],
    column: str,
    checks: Checks,
    tools: list[dict[str, Any]] | None,
    parallel: bool = True,
) -> list[Message] | None:
    """The conversation with legacy calls and answers in the modern shape, once every call
    is checked against the declared `tools` (None: not checked) and every answer against the
    calls; None when something is wrong (added to `checks`)."""
    before = len(checks.problems)
    declared = {t["function"]["name"]: t["function"] for t in tools} if tools else None
    out: list[Message] = []
    pending: dict[str, str] = {}  # call id -> function name, of the last assistant message
    answered: set[str] = set()
    caller = -1
    for i, message in enumerate(messages):
        where = f"{column}[{i}]"
        if message["role"] in ("tool", "function"):
            message = _answer(message, where, pending, answered, checks)
        else:
            _unanswered(messages, caller, i, pending, answered, column, checks)
            pending, answered, caller = {}, set(), -1
        calls = message.get("tool_calls") or []
        if calls:
            caller = i
            pending = {c["id"]: c["function"]["name"] for c in calls}
            if not parallel and len(calls) > 1:
                why = f"parallel_tool_calls is false, but the message makes {len(calls)} calls."
                checks.add("invalid_tool_call", why, f"{where}.tool_calls")
            for n, call in enumerate(calls):
                _check_declared(call, declared, f"{where}.tool_calls[{n}].function", checks)
        out.append(message)
    return out if len(checks.problems) == before else None


def _answer(
    message: Message, where: str, pending: dict[str, str], answered: set[str], checks: Checks
) -> Message:
    """A tool (or legacy function) message, as a tool message answering one pending call."""
    if message["role"] == "function":
        name = message.get("name")
        ids = [i for i, n in pending.items() if n == name and i not in answered]
        if not ids:
            why = (
                f"This function message answers {name!r}, which the assistant did not call "
                "just before."
            )
            checks.add("unknown_tool_call_id", why, f"{where}.name")
            return message
        message = {**message, "role": "tool", "tool_call_id": ids[0]}
    call_id = message.get("tool_call_id")
    if call_id not in pending:
        known = ", ".join(map(repr, pending)) or "none"
        why = (
            f"tool_call_id {call_id!r} answers no call of the assistant message just before "
            f"(its calls: {known})."
        )
        checks.add("unknown_tool_call_id", why, f"{where}.tool_call_id")
    elif call_id in answered:
        why = f"Call {call_id!r} is answered twice."
        checks.add("unknown_tool_call_id", why, f"{where}.tool_call_id")
    else:
        answered.add(call_id)
    return message


def _unanswered(
    messages: list[Message],
    caller: int,
    i: int,
    pending: dict[str, str],
    answered: set[str],
    column: str,
    checks: Checks,
) -> None:
    """A problem when the conversation goes on (at message `i`) past calls not all answered."""
    missing = [c for c in pending if c not in answered]
    if caller >= 0 and missing:
        why = (
            f"The conversation goes on at message {i}, but call(s) {', '.join(map(repr, missing))} "
            "got no tool message; answer each call, or end the conversation with the calls."
        )
        checks.add("unanswered_tool_call", why, f"{column}[{caller}].tool_calls")


def _check_declared(
    call: dict[str, Any], declared: dict[str, Any] | None, where: str, checks: Checks
) -> None:
    """A call names a declared tool, with the arguments it requires."""
    name = call["function"]["name"]
    if declared is None:
        return
    if name not in declared:
        why = (
            f"The call names {name!r}, which the line's tools do not declare "
            f"({', '.join(declared)})."
        )
        checks.add("undeclared_tool", why, f"{where}.name")
        return
    required = declared[name].get("parameters", {}).get("required", [])
    arguments = json.loads(call["function"]["arguments"])
    missing = [r for r in required if r not in arguments]
    if missing:
        why = f"The call of {name!r} lacks the required argument(s) {', '.join(missing)}."
        checks.add("invalid_tool_arguments", why, f"{where}.arguments")
