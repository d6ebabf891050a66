"""Chat data with tools on the tiny Qwen2 model: the conversation renders with its tools (in
the fallback for ChatML, natively for a template that knows tools), the loss sees the
assistant's calls and answers but not the tool results nor weight-0 turns, and short
supervised and reinforcement runs train on such data, the grader reading the answer's calls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.datasets.test_chat_tools import WEATHER, answer, call, calling
from tests.training.conftest import run_context
from tuneforge.datasets.chat_render import TOOLS_PROMPT, chat_text, native_tools
from tuneforge.training import llm, reinforcement, supervised

CITIES = ["Paris", "Lyon", "Rome", "Oslo", "Bern", "Riga", "Kyiv", "Lima"]

# A template that knows tools, in the way of Qwen2.5's and Llama 3.1's: the schemas in a
# system turn, calls written by the template, arguments given as objects.
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTOOLS {% for t in tools %}{{ t | tojson }}{% endfor %}"
    "<|im_end|>\n{% endif %}"
    "{% for m in messages %}"
    "{% if m.role == 'tool' %}<|im_start|>tool\n{{ m.content }}<|im_end|>\n"
    "{% elif m.tool_calls %}<|im_start|>assistant\n{% for c in m.tool_calls %}"
    "CALL {{ c.function.name }} {{ c.function.arguments | tojson }}{% endfor %}<|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def conversation(city: str, weight: int = 1) -> list[dict[str, Any]]:
    arguments = json.dumps({"city": city})
    return [
        {"role": "user", "content": f"Weather in {city}?"},
        calling(call("c1", arguments=arguments), weight=weight),
        answer("c1", '{"celsius": 20}'),
        {"role": "assistant", "content": f"20 degrees in {city}."},
    ]


def trained_text(tokenizer: Any, messages: list[dict[str, Any]], tools: Any) -> str:
    row = llm.tokenize_conversation(tokenizer, messages, tools)
    ids, labels = row["input_ids"], row["labels"]
    return str(tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100]))


def test_fallback_rendering_trains_on_the_calls_and_answers(tiny_qwen: Path) -> None:
    tokenizer = llm.load_chat_tokenizer(str(tiny_qwen))
    assert not native_tools(tokenizer)  # ChatML: no tools section
    messages = conversation("Paris")
    text = chat_text(tokenizer, messages, [WEATHER])
    # The schemas in a system turn, the call in the assistant's text, the result as a user turn.
    assert text.startswith(f"<|im_start|>system\n{TOOLS_PROMPT}{json.dumps(WEATHER)}\n</tools>")
    call_text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert f"<|im_start|>assistant\n{call_text}<|im_end|>" in text
    assert '<|im_start|>user\n<tool_response>\n{"celsius": 20}\n</tool_response>' in text
    assert trained_text(tokenizer, messages, [WEATHER]) == (
        f"{call_text}<|im_end|>\n20 degrees in Paris.<|im_end|>\n"
    )
    # A call with weight 0 is context only.
    only_answer = trained_text(tokenizer, conversation("Paris", weight=0), [WEATHER])
    assert only_answer == "20 degrees in Paris.<|im_end|>\n"


def test_a_template_that_knows_tools_renders_them_itself(tiny_qwen: Path) -> None:
    tokenizer = llm.load_chat_tokenizer(str(tiny_qwen))
    tokenizer.chat_template = TOOL_TEMPLATE
    assert native_tools(tokenizer)
    messages = conversation("Rome")
    text = chat_text(tokenizer, messages, [WEATHER])
    assert text.startswith(f"<|im_start|>system\nTOOLS {json.dumps(WEATHER)}")
    assert "<tool_call>" not in text
    assert trained_text(tokenizer, messages, [WEATHER]) == (
        'CALL get_weather {"city": "Rome"}<|im_end|>\n20 degrees in Rome.<|im_end|>\n'
    )


def tool_rows() -> list[dict[str, Any]]:
    return [{"messages": conversation(city), "tools": [WEATHER]} for city in CITIES]


@pytest.mark.usefixtures("one_thread")
def test_supervised_training_learns_the_calls(tiny_qwen: Path, tmp_path: Path) -> None:
    method = {
        "type": "supervised",
        "supervised": {
            "lora": {"r": 16, "alpha": 32},
            "hyperparameters": {
                "n_epochs": 6,
                "batch_size": 4,
                "learning_rate": 1e-2,
                "lr_scheduler": "constant",
                "warmup_ratio": 0,
                "gradient_checkpointing": False,
                "eval_steps": 1000,
            },
        },
    }
    rows = tool_rows()[:4]
    ctx = run_context(tmp_path, tiny_qwen, method, rows, rows)
    result = supervised.run(ctx)
    assert result.steps == 6
    assert result.evaluation["loss"] < 0.8 * result.baseline["loss"]
    # The generation checks judge text answers: rows with tools are not among their prompts.
    assert result.details["generation_checks"]["base_model"] is None


@pytest.mark.usefixtures("one_thread")
def test_reinforcement_prompts_with_tools_and_graders_of_the_calls(
    tiny_qwen: Path, tmp_path: Path
) -> None:
    grader = {
        "type": "string_check",
        "name": "calls",
        "input": "{{sample.output_tools}}",
        "reference": "[]",
        "operation": "eq",
    }
    rows = [
        {
            "messages": conversation(city)[:3],
            "tools": [WEATHER],
            "item": {"city": city},
            "grader": grader,
            "max_completion_length": 8,
        }
        for city in CITIES[:4]
    ]
    method = {
        "type": "reinforcement",
        "reinforcement": {
            "grader": grader,
            "hyperparameters": {
                "n_epochs": 1,
                "batch_size": 2,
                "num_generations": 2,
                "max_completion_length": 8,
                "learning_rate": 1e-3,
                "warmup_ratio": 0,
            },
        },
    }
    ctx = run_context(tmp_path, tiny_qwen, method, rows, rows[:2], layout="reinforcement")
    result = reinforcement.run(ctx)
    assert result.steps == 2
    # A random tiny model makes no calls: the output_tools of every answer is [].
    assert result.evaluation["reward_mean"] == 1.0
    sample = reinforcement.sample_of(
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    assert json.loads(sample.output_tools[0]["function"]["arguments"]) == {"city": "Oslo"}
