"""Chat and reinforcement data with tools, as OpenAI's fine-tuning format writes them: tools
and legacy functions, tool calls and legacy function calls, tool answers; each problem with
its line and place, and rows in the modern shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.datasets.test_chat_validation import chat, chat_tokenizer, problems, write
from tuneforge.datasets.chat_render import parse_tool_calls
from tuneforge.datasets.reinforcement import read_reinforcement_file

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def call(call_id: str, name: str = "get_weather", arguments: Any = '{"city": "Paris"}') -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def calling(*calls: dict, content: Any = None, **extra: Any) -> dict:
    return {"role": "assistant", "content": content, "tool_calls": list(calls), **extra}


def answer(call_id: str, content: str = '{"celsius": 21}') -> dict:
    return {"role": "tool", "tool_call_id": call_id, "content": content}


USER = {"role": "user", "content": "Weather in Paris?"}
DONE = {"role": "assistant", "content": "It is 21 degrees in Paris."}
# A conversation whose last message is the call: the model learns to call.
ENDS_WITH_CALL = {"messages": [USER, calling(call("c1"))], "tools": [WEATHER]}
ROUND_TRIP = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        USER,
        calling(call("c1"), call("c2", arguments='{"city": "Lyon"}'), weight=0),
        answer("c1"),
        answer("c2", '{"celsius": 19}'),
        DONE,
    ],
    "tools": [WEATHER],
    "parallel_tool_calls": True,
}
WEATHER_CALL = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
LEGACY = {
    "messages": [
        USER,
        {"role": "assistant", "content": None, "function_call": WEATHER_CALL},
        {"role": "function", "name": "get_weather", "content": '{"celsius": 21}'},
        DONE,
    ],
    "functions": [WEATHER["function"]],
}


def test_tool_lines_validate_and_come_back_in_the_modern_shape(tmp_path: Path) -> None:
    data = chat(tmp_path, [ENDS_WITH_CALL, ROUND_TRIP, LEGACY], tokenizer=chat_tokenizer())
    assert data.valid, data.report["problems"]
    first, second, legacy = data.rows
    assert first == {
        "messages": [USER, {"role": "assistant", "content": None, "tool_calls": [call("c1")]}],
        "tools": [WEATHER],
    }
    assert second["messages"][2]["weight"] == 0
    assert [m["role"] for m in second["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
    ]
    # Legacy functions become tools, a function call a call with an id, its answer a tool's.
    assert legacy["tools"] == [WEATHER]
    assert legacy["messages"][1]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": WEATHER_CALL}
    ]
    assert legacy["messages"][2] == {
        "role": "tool",
        "content": '{"celsius": 21}',
        "name": "get_weather",
        "tool_call_id": "call_1",
    }
    statistics = data.report["statistics"]
    assert statistics["role_counts"]["tool"] == 3
    # The trained texts include the calls, as the fallback writes them.
    assert statistics["chars"]["trained_per_epoch"] > 2 * len(DONE["content"])


def test_every_tool_problem_is_reported_with_its_line_and_place(tmp_path: Path) -> None:
    tools = {"tools": [WEATHER]}
    data = chat(
        tmp_path,
        [
            ENDS_WITH_CALL,  # 1: fine
            {"messages": [USER, calling(call("c1", arguments={"city": "Paris"}))], **tools},  # 2
            {"messages": [USER, calling(call("c1", arguments='{"city": '))], **tools},  # 3
            {"messages": [USER, calling(call("c1", arguments="[1]"))], **tools},  # 4
            {"messages": [USER, calling(call("c1", name="get_time"))], **tools},  # 5
            {"messages": [USER, calling(call("c1", arguments='{"unit": "C"}'))], **tools},  # 6
            {"messages": [USER, calling(call("c1")), answer("c9"), DONE], **tools},  # 7
            {"messages": [USER, calling(call("c1"), call("c2")), answer("c1"), DONE], **tools},  # 8
            {"messages": [USER, answer("c1"), DONE], **tools},  # 9
            {"messages": [USER, calling(call("c1")), DONE], **tools},  # 10
            {"messages": [USER, DONE], "tools": [{"type": "function", "function": {}}]},  # 11
            {"messages": [USER, DONE], "tools": [{"type": "retrieval"}]},  # 12
            {
                "messages": [USER, DONE],
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "array", "required": ["x"]},
                        },
                    }
                ],
            },  # 13
            {"messages": [USER, DONE], "tools": [WEATHER, WEATHER]},  # 14
            {"messages": [USER, DONE], "tools": [WEATHER], "functions": [WEATHER]},  # 15
            {
                "messages": [
                    USER,
                    calling(
                        {"type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                    ),
                ],
                **tools,
            },  # 16
            {
                "messages": [
                    USER,
                    {"role": "user", "content": "x", "tool_calls": [call("c1")]},
                    DONE,
                ],
                **tools,
            },  # 17
            {
                "messages": [USER, calling(call("c1"), call("c2"))],
                "parallel_tool_calls": False,
                **tools,
            },  # 18
            {"messages": [USER, {"role": "tool", "content": "x"}, DONE], **tools},  # 19
            {
                "messages": [USER, calling(call("c1")), answer("c1"), answer("c1"), DONE],
                **tools,
            },  # 20
            {"messages": [USER, calling()], **tools},  # 21
        ],
    )
    assert not data.valid
    assert problems(data) == [
        (2, "messages[1].tool_calls[0].function.arguments", "invalid_tool_arguments"),
        (3, "messages[1].tool_calls[0].function.arguments", "invalid_tool_arguments"),
        (4, "messages[1].tool_calls[0].function.arguments", "invalid_tool_arguments"),
        (5, "messages[1].tool_calls[0].function.name", "undeclared_tool"),
        (6, "messages[1].tool_calls[0].function.arguments", "invalid_tool_arguments"),
        (7, "messages[1].tool_calls", "unanswered_tool_call"),
        (7, "messages[2].tool_call_id", "unknown_tool_call_id"),
        (8, "messages[1].tool_calls", "unanswered_tool_call"),
        (9, "messages[1]", "role_order"),
        (10, "messages[2]", "role_order"),
        (11, "tools[0].function.name", "invalid_tools"),
        (12, "tools[0]", "invalid_tools"),
        (13, "tools[0].function.parameters.required", "invalid_tools"),
        (13, "tools[0].function.parameters.type", "invalid_tools"),
        (14, "tools", "invalid_tools"),
        (15, "functions", "invalid_tools"),
        (16, "messages[1].tool_calls[0].id", "invalid_tool_call"),
        (17, "messages[1]", "role_order"),
        (17, "messages[1].tool_calls", "invalid_tool_call"),
        (18, "messages[1].tool_calls", "invalid_tool_call"),
        (19, "messages[1]", "role_order"),
        (19, "messages[1].tool_call_id", "invalid_tool_call"),
        (20, "messages[3].tool_call_id", "unknown_tool_call_id"),
        (21, "messages[1].tool_calls", "invalid_tool_call"),
    ]
    messages = {(p["line"], p["column"]): p["message"] for p in data.report["problems"]}
    assert (
        "JSON object (as the model writes it), got object"
        in messages[(2, "messages[1].tool_calls[0].function.arguments")]
    )
    assert "'get_time'" in messages[(5, "messages[1].tool_calls[0].function.name")]
    assert "city" in messages[(6, "messages[1].tool_calls[0].function.arguments")]
    assert "'c2'" in messages[(8, "messages[1].tool_calls")]
    assert "answered by tool messages first" in messages[(10, "messages[2]")]


def test_dpo_data_has_no_tools(tmp_path: Path) -> None:
    from tests.datasets.test_chat_validation import preference

    line = {
        "input": {"messages": [USER, calling(call("c1")), answer("c1")]},
        "preferred_output": [DONE],
        "non_preferred_output": [{"role": "assistant", "content": "No idea."}],
    }
    data = preference(tmp_path, [line])
    codes = {(p[1], p[2]) for p in problems(data)}
    assert ("input.messages[1].tool_calls", "unknown_message_key") in codes
    assert ("input.messages[2].role", "unknown_role") in codes


def test_reinforcement_prompts_may_use_tools(tmp_path: Path) -> None:
    prompt = {
        "messages": [USER, calling(call("c1")), answer("c1")],
        "tools": [WEATHER],
        "reference": "21",
    }
    bad = {"messages": [USER], "tools": [{"type": "function"}], "reference": "x"}
    path = write(tmp_path, "rft.jsonl", [prompt, {**prompt, "messages": [USER]}, bad])
    data = read_reinforcement_file(path, "jsonl", min_rows=1)
    assert [(p["line"], p["code"]) for p in data.report["problems"]] == [(3, "invalid_tools")]
    good = read_reinforcement_file(write(tmp_path, "ok.jsonl", [prompt]), "jsonl", min_rows=1)
    assert good.valid
    assert good.rows[0]["tools"] == [WEATHER]
    assert good.rows[0]["item"]["reference"] == "21"
    assert good.rows[0]["messages"][-1]["role"] == "tool"


def test_tool_calls_are_read_back_from_answers() -> None:
    text = (
        'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        '</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lyon"}}'
    )
    calls = parse_tool_calls(text)
    assert [json.loads(c["function"]["arguments"])["city"] for c in calls] == ["Paris", "Lyon"]
    assert calls[0] == {
        "id": "call_0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    # One JSON call as the whole answer (Llama 3.1's way); JSON that is no call is none.
    bare = parse_tool_calls('{"name": "get_weather", "parameters": {"city": "Rome"}}')
    assert bare[0]["function"]["arguments"] == '{"city": "Rome"}'
    assert parse_tool_calls('{"name": "Bob", "age": 3}') == []
    assert parse_tool_calls("<tool_call>not json</tool_call>") == []
    assert parse_tool_calls("It is sunny.") == []


def test_graders_read_the_calls_of_an_answer() -> None:
    from tuneforge.graders.run import run_grader
    from tuneforge.graders.spec import parse_grader
    from tuneforge.graders.templates import Sample
    from tuneforge.training.reinforcement import LocalBackends

    grader = parse_grader(
        {
            "type": "string_check",
            "name": "called",
            "input": "{{sample.output_tools[0].function.name}}",
            "reference": "{{item.tool}}",
            "operation": "eq",
        },
        "grader",
    )
    answer = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    item = {"tool": "get_weather"}
    assert run_grader(grader, Sample.of_answer(answer), item, LocalBackends()).reward == 1.0
    # A text answer has no calls: the reference into them is the answer's fault, reward 0.
    text = run_grader(grader, Sample.of_answer("Sunny."), item, LocalBackends())
    assert text.reward == 0.0
