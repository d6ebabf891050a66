"""Conversations with tools as the model reads them, and tool calls read back from its answers.

A conversation without tools is the chat template's, as ever. With tools (declared tools, an
assistant message's `tool_calls`, `tool` messages) there are two renderings:

- **native**, when the tokenizer's chat template knows tools (it reads `tools` and
  `tool_calls`, as Qwen2.5's, Llama 3.1's or Mistral's do): transformers'
  `apply_chat_template(messages, tools=…)`, the calls' arguments given as objects;
- **fallback**, for templates without tools (ChatML as SmolLM2 or our own default writes it,
  Llama 2, …): plain messages in the Hermes/Qwen convention. The tools' JSON schemas go in a
  system message (after the line's own system text, or as the first message), each call is
  written in the assistant's text as `<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>`
  after its content, and tool answers become a user message of
  `<tool_response>\\n…\\n</tool_response>` blocks (consecutive answers in one message, so the
  turns still alternate).

`parse_tool_calls` reads `<tool_call>` blocks (or an answer that is one JSON call) back as
OpenAI's `tool_calls`, for graders' `{{sample.output_tools}}`.
"""

from __future__ import annotations

import json
import re
from typing import Any

Message = dict[str, Any]

TOOLS_PROMPT = (
    "You can call the functions described below. To call one, write\n<tool_call>\n"
    '{"name": <function name>, "arguments": <arguments as a JSON object>}\n</tool_call>\n'
    "(one block per call). The results come back in <tool_response> blocks.\n<tools>\n"
)
CALL = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def uses_tools(messages: list[Message], tools: list[Any] | None = None) -> bool:
    """Whether a conversation declares tools, calls one or answers a call."""
    return bool(tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)


def native_tools(tokenizer: Any) -> bool:
    """Whether the tokenizer's chat template renders tools and tool calls itself."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("tool_use") or template.get("default")
    return isinstance(template, str) and "tools" in template and "tool_calls" in template


def call_text(call: dict[str, Any]) -> str:
    """One call as the fallback writes it in the assistant's text."""
    function = call["function"]
    body = {"name": function["name"], "arguments": json.loads(function["arguments"])}
    return f"<tool_call>\n{json.dumps(body, ensure_ascii=False)}\n</tool_call>"


def message_text(message: Message) -> str:
    """What a message says: its content, and (fallback writing) its calls."""
    parts = [str(message["content"])] if message.get("content") else []
    parts += [call_text(c) for c in message.get("tool_calls") or []]
    return "\n".join(parts)


def fallback_messages(messages: list[Message], tools: list[Any] | None) -> list[Message]:
    """The conversation as plain system, user and assistant messages (see the module)."""
    out: list[Message] = []
    if tools:
        schemas = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        block = f"{TOOLS_PROMPT}{schemas}\n</tools>"
        if messages and messages[0]["role"] == "system":
            first, messages = messages[0], messages[1:]
            out.append({**first, "content": f"{first['content']}\n\n{block}"})
        else:
            out.append({"role": "system", "content": block})
    for message in messages:
        if message["role"] == "tool":
            answer = f"<tool_response>\n{message['content']}\n</tool_response>"
            if out and out[-1].get("tool_answers"):
                out[-1] = {**out[-1], "content": f"{out[-1]['content']}\n{answer}"}
            else:
                out.append({"role": "user", "content": answer, "tool_answers": True})
            continue
        plain = {k: v for k, v in message.items() if k not in ("tool_calls", "tool_call_id")}
        out.append({**plain, "content": message_text(message)})
    return [{k: v for k, v in m.items() if k != "tool_answers"} for m in out]


def native_messages(messages: list[Message]) -> list[Message]:
    """Messages as transformers' tool templates read them: arguments as objects, content a
    string."""
    out = []
    for message in messages:
        message = {**message, "content": message.get("content") or ""}
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {
                    **call,
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": json.loads(call["function"]["arguments"]),
                    },
                }
                for call in message["tool_calls"]
            ]
        out.append(message)
    return out


def chat_text(
    tokenizer: Any,
    messages: list[Message],
    tools: list[Any] | None = None,
    *,
    prompt: bool = False,
) -> str:
    """The text of a conversation as the model reads it (`prompt`: with the start of an
    assistant turn after it), tools rendered natively or by the fallback."""
    extra: dict[str, Any] = {}
    if uses_tools(messages, tools):
        if native_tools(tokenizer):
            messages = native_messages(messages)
            if tools:
                extra["tools"] = tools
        else:
            messages = fallback_messages(messages, tools)
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=prompt, **extra
    )
    return str(text)


def parse_tool_calls(text: str) -> list[dict[str, Any]]:
    """OpenAI's `tool_calls` of an answer: its `<tool_call>` blocks (a block whose JSON does not
    parse is left out), or the answer itself when it is one JSON call (`{"name": …,
    "arguments"|"parameters": {…}}`, as Llama 3.1 writes them). Arguments come back as a JSON
    string, as OpenAI gives them."""
    tagged = "<tool_call>" in text
    bodies = CALL.findall(text) if tagged else [text.strip()]
    calls: list[dict[str, Any]] = []
    for body in bodies:
        try:
            value = json.loads(body)
        except ValueError:
            continue
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            continue
        if not tagged and not ({"arguments", "parameters"} & value.keys()):
            continue
        arguments = value.get("arguments", value.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                continue
        calls.append(
            {
                "id": f"call_{len(calls)}",
                "type": "function",
                "function": {
                    "name": value["name"],
                    "arguments": json.dumps(arguments, ensure_ascii=False),
                },
            }
        )
    return calls
