"""Validation of chat (supervised) and preference (DPO) data: every problem with its line and
code, canonical rows, and length statistics in characters and in tokens of a local tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tuneforge.datasets.chat import ChatData, read_chat_file, read_preference_file

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)
WORDS = ["system", "user", "assistant", "hello", "world", "hi", "there", "be", "brief"]


def bare_tokenizer() -> Tokenizer:
    """One token per word (unknown words are `<unk>`, still one token), ChatML's markers and a
    special token of this model alone, `<extra_0>`."""
    vocab = {word: i for i, word in enumerate(["<unk>", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<|im_start|>", "<|im_end|>", "<extra_0>"])
    return tokenizer


def chat_tokenizer(template: str | None = CHATML) -> PreTrainedTokenizerFast:
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bare_tokenizer(), unk_token="<unk>", eos_token="<|im_end|>"
    )
    tokenizer.chat_template = template
    return tokenizer


def write(tmp_path: Path, name: str, lines: list[Any]) -> Path:
    """A JSONL file: dicts and lists as JSON, strings as they are (to write broken lines)."""
    path = tmp_path / name
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def chat(tmp_path: Path, lines: list[Any], **kwargs: Any) -> ChatData:
    kwargs.setdefault("min_rows", 1)
    return read_chat_file(write(tmp_path, "chat.jsonl", lines), "jsonl", **kwargs)


def preference(tmp_path: Path, lines: list[Any], **kwargs: Any) -> ChatData:
    kwargs.setdefault("min_rows", 1)
    return read_preference_file(write(tmp_path, "dpo.jsonl", lines), "jsonl", **kwargs)


def problems(data: ChatData) -> list[tuple[int | None, str | None, str]]:
    return [(p["line"], p["column"], p["code"]) for p in data.report["problems"]]


def msg(role: str, content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": role, "content": content, **extra}


def convo(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"messages": [msg(role, content) for role, content in pairs]}


# Two conversations whose lengths are easy to count by hand (see test_token_statistics...).
SHORT = convo(("user", "hello world"), ("assistant", "hi there"))
WITH_SYSTEM = convo(("system", "be brief"), ("user", "hello"), ("assistant", "hi"))


def test_valid_chat_file_gives_canonical_rows_and_character_statistics(tmp_path: Path) -> None:
    weighted = {
        "messages": [
            msg("user", "what"),
            msg("assistant", "no", weight=0),
            msg("user", "why"),
            msg("assistant", "yes", weight=1),
        ]
    }
    data = chat(tmp_path, [SHORT, WITH_SYSTEM, weighted, SHORT])
    assert data.valid, data.report["problems"]
    assert data.layout == "chat"
    assert data.report["columns"] == ["messages"]
    assert data.rows[0] == SHORT and data.rows[1] == WITH_SYSTEM
    assert data.rows[2]["messages"][1] == {"role": "assistant", "content": "no", "weight": 0}
    stats = data.report["statistics"]
    assert stats["rows"] == 4
    assert stats["exact_duplicates"] == 1
    assert stats["role_counts"] == {"system": 1, "user": 5, "assistant": 5}
    assert stats["messages_per_example"] == {
        "min": 2,
        "median": 2.5,
        "p95": pytest.approx(3.85),
        "max": 4,
    }
    # Contents: SHORT 11 + 8 = 19, WITH_SYSTEM 8 + 5 + 2 = 15, weighted 4 + 2 + 3 + 3 = 12.
    # Trained: assistant contents, the weight-0 "no" left out: 8 + 2 + 3 + 8 = 21 of 65.
    assert stats["chars"] == {
        "per_example": {"min": 12, "median": 17.0, "p95": 19.0, "max": 19},
        "per_epoch": 65,
        "trained_per_epoch": 21,
        "trained_share": round(21 / 65, 4),
    }
    assert "tokens" not in stats


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_prompt_completion_in_every_format_becomes_messages(tmp_path: Path, fmt: str) -> None:
    pairs = [("hello world", "hi there"), ("why", "good")]
    path = tmp_path / f"pc.{fmt}"
    if fmt == "jsonl":
        write(tmp_path, path.name, [{"prompt": p, "completion": c} for p, c in pairs])
    elif fmt == "csv":
        path.write_text("prompt,completion\n" + "".join(f"{p},{c}\n" for p, c in pairs))
    else:
        pq.write_table(
            pa.table({"prompt": [p for p, _ in pairs], "completion": [c for _, c in pairs]}), path
        )
    data = read_chat_file(path, fmt, min_rows=2)
    assert data.valid, data.report["problems"]
    assert data.layout == "prompt_completion"
    assert data.rows == [convo(("user", p), ("assistant", c)) for p, c in pairs]
    assert data.report["statistics"]["chars"]["trained_per_epoch"] == len("hi there") + len("good")


def test_chat_in_parquet_reads_null_optional_fields_as_absent(tmp_path: Path) -> None:
    messages = [
        {"role": "user", "content": "hello", "weight": None},
        {"role": "assistant", "content": "hi", "weight": 1},
    ]
    pq.write_table(pa.table({"messages": [messages]}), tmp_path / "c.parquet")
    data = read_chat_file(tmp_path / "c.parquet", "parquet", min_rows=1)
    assert data.valid, data.report["problems"]
    assert data.rows == [{"messages": [msg("user", "hello"), msg("assistant", "hi", weight=1)]}]


def test_every_message_problem_is_reported_with_its_line_and_place(tmp_path: Path) -> None:
    data = chat(
        tmp_path,
        [
            SHORT,  # 1
            "not json",  # 2
            "[1, 2]",  # 3
            {"prompts": "hello"},  # 4: a chat file: 'messages' is missing
            {"messages": "hello"},  # 5
            {"messages": ["hello", msg("assistant", "hi")]},  # 6
            {"messages": [{"content": "hi"}, {"role": "assistant"}]},  # 7
            convo(("user", "hi"), ("bot", "hi")),  # 8
            {"messages": [msg("user", "hi", lang="en"), msg("assistant", "hi")]},  # 9
            {"messages": [msg("user", "hi", weight=1), msg("assistant", "x", weight=0.5)]},  # 10
            convo(("system", "be brief"), ("user", "hello")),  # 11
            convo(("user", "  \n"), ("assistant", "")),  # 12
            {"messages": [msg("user", None), msg("assistant", ["a"])]},  # 13
            convo(("user", "hi"), ("assistant", "hi"), ("system", "late")),  # 14
            convo(("assistant", "hi"), ("user", "hello"), ("assistant", "hi")),  # 15
            convo(("user", "hi"), ("user", "again"), ("assistant", "hi")),  # 16
            convo(("user", "hi"), ("assistant", "hi"), ("user", "and?")),  # 17
            convo(("user", "hi<|im_end|>"), ("assistant", "[INST] </s> sure")),  # 18
            {"messages": [msg("user", "hi"), msg("assistant", "hi")], "tools": []},  # 19
        ],
    )
    assert not data.valid
    assert data.rows == []
    assert problems(data) == [
        (2, None, "invalid_json"),
        (3, None, "not_an_object"),
        (4, "messages", "missing_messages"),
        (4, "prompts", "unknown_column"),
        (5, "messages", "messages_not_a_list"),
        (6, "messages[0]", "message_not_an_object"),
        (7, "messages[0]", "missing_role"),
        (7, "messages[1]", "missing_content"),
        (8, "messages[1].role", "unknown_role"),
        (9, "messages[0].lang", "unknown_message_key"),
        (10, "messages[0].weight", "invalid_weight"),
        (10, "messages[1].weight", "invalid_weight"),
        (11, "messages", "no_assistant_message"),
        (12, "messages[0].content", "empty_content"),
        (12, "messages[1].content", "empty_content"),
        (13, "messages[0].content", "wrong_type"),
        (13, "messages[1].content", "wrong_type"),
        (14, "messages[2]", "role_order"),
        (15, "messages[0]", "role_order"),
        (16, "messages[1]", "role_order"),
        (17, "messages[2]", "role_order"),
        (18, "messages[0].content", "special_token"),
        (18, "messages[1].content", "special_token"),
        (19, "tools", "invalid_tools"),
    ]
    assert data.report["problem_count"] == 24
    assert data.report["problems_by_code"]["role_order"] == 4
    messages = {(p["line"], p["column"]): p["message"] for p in data.report["problems"]}
    assert "'bot'" in messages[(8, "messages[1].role")]
    assert "system message may only come first" in messages[(14, "messages[2]")]
    assert "must end with an assistant message" in messages[(17, "messages[2]")]
    assert messages[(18, "messages[1].content")].startswith(
        "messages[1].content contains </s>, [INST]"
    )
    assert data.report["statistics"]["rows"] == 1  # only line 1 passed


def test_a_file_of_other_columns_gets_every_lines_problems(tmp_path: Path) -> None:
    data = chat(tmp_path, [{"text": "a"}, {"text": "b"}])
    assert problems(data) == [
        (1, "messages", "missing_messages"),
        (1, "text", "unknown_column"),
        (2, "messages", "missing_messages"),
        (2, "text", "unknown_column"),
    ]


def test_prompt_completion_problems(tmp_path: Path) -> None:
    data = chat(
        tmp_path,
        [
            {"prompt": "hello", "completion": "hi"},
            {"prompt": "hello"},
            {"prompt": " ", "completion": 3},
            {"prompt": "<|eot_id|>", "completion": "ok"},
        ],
    )
    assert data.layout == "prompt_completion"
    assert problems(data) == [
        (2, "completion", "missing_field"),
        (3, "completion", "wrong_type"),
        (3, "prompt", "empty_content"),
        (4, "prompt", "special_token"),
    ]


def test_too_few_rows_empty_file_and_the_problem_cap(tmp_path: Path) -> None:
    few = chat(tmp_path, [SHORT, SHORT], min_rows=3)
    assert problems(few) == [(None, None, "too_few_rows")]
    assert few.rows == []
    (tmp_path / "empty.jsonl").write_bytes(b"")
    empty = read_chat_file(tmp_path / "empty.jsonl", "jsonl", min_rows=1)
    assert problems(empty) == [(None, None, "empty_file")] and empty.layout is None
    many = chat(tmp_path, [convo(("user", ""), ("assistant", "hi"))] * 150)
    assert many.report["problem_count"] == 150
    assert many.report["problems_by_code"] == {"empty_content": 150}
    assert [p["line"] for p in many.report["problems"]] == list(range(1, 101))


def test_token_statistics_follow_the_chat_template(tmp_path: Path) -> None:
    # ChatML: <|im_start|>, the role, the content's words, <|im_end|>: content + 3 tokens.
    # SHORT: (2 + 3) + (2 + 3) = 10 tokens, 2 trained; WITH_SYSTEM: 5 + 4 + 4 = 13, 1 trained.
    data = chat(tmp_path, [SHORT, WITH_SYSTEM], tokenizer=chat_tokenizer())
    assert data.valid, data.report["problems"]
    assert data.report["statistics"]["tokens"] == {
        "per_example": {"min": 10, "median": 11.5, "p95": pytest.approx(12.85), "max": 13},
        "per_epoch": 23,
        "trained_per_epoch": 3,
        "trained_share": round(3 / 23, 4),
    }


def test_without_a_chat_template_tokens_are_the_contents(tmp_path: Path) -> None:
    # SHORT: 2 + 2 words, WITH_SYSTEM: 2 + 1 + 1 words.
    expected = {
        "per_example": {"min": 4, "median": 4.0, "p95": 4.0, "max": 4},
        "per_epoch": 8,
        "trained_per_epoch": 3,
        "trained_share": 0.375,
    }
    wrapped = chat(tmp_path, [SHORT, WITH_SYSTEM], tokenizer=chat_tokenizer(template=None))
    assert wrapped.report["statistics"]["tokens"] == expected
    # The bare tokenizer that `load_tokenizer` gives works the same.
    bare = chat(tmp_path, [SHORT, WITH_SYSTEM], tokenizer=bare_tokenizer())
    assert bare.report["statistics"]["tokens"] == expected


def test_too_long_examples_are_reported_not_cut(tmp_path: Path) -> None:
    lines = [SHORT, WITH_SYSTEM, SHORT]
    data = chat(tmp_path, lines, tokenizer=chat_tokenizer(), max_seq_length=12)
    assert problems(data) == [(2, None, "too_long")]
    assert "13 tokens" in data.report["problems"][0]["message"]
    assert data.rows == []
    assert data.report["statistics"]["tokens"]["per_example"]["max"] == 13
    fits = chat(tmp_path, lines, tokenizer=chat_tokenizer(), max_seq_length=13)
    assert fits.valid and fits.rows[1] == WITH_SYSTEM
    # Without a tokenizer, lengths in tokens are unknown: nothing is flagged.
    assert chat(tmp_path, lines, max_seq_length=1).valid


def test_the_tokenizers_own_special_tokens_are_flagged(tmp_path: Path) -> None:
    lines = [SHORT, convo(("user", "say <extra_0>"), ("assistant", "ok"))]
    assert chat(tmp_path, lines).valid
    for tokenizer in (chat_tokenizer(), bare_tokenizer()):
        assert problems(chat(tmp_path, lines, tokenizer=tokenizer)) == [
            (2, "messages[0].content", "special_token")
        ]


def test_a_chat_template_that_rejects_an_example_is_reported(tmp_path: Path) -> None:
    no_system = (
        "{% if messages[0]['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}" + CHATML
    )
    data = chat(tmp_path, [SHORT, WITH_SYSTEM], tokenizer=chat_tokenizer(no_system))
    assert problems(data) == [(2, None, "chat_template_error")]
    assert "System role not supported" in data.report["problems"][0]["message"]
    assert data.report["statistics"]["tokens"]["per_epoch"] == 10


def test_flat_preference_rows(tmp_path: Path) -> None:
    lines = [
        {"prompt": "hello world", "chosen": "hi there", "rejected": "bad"},
        {"prompt": "why", "chosen": "yes", "rejected": "no"},
    ]
    data = preference(tmp_path, lines)
    assert data.valid, data.report["problems"]
    assert data.layout == "preference"
    assert data.report["columns"] == ["prompt", "chosen", "rejected"]
    assert data.rows[0] == {
        "prompt": [msg("user", "hello world")],
        "chosen": [msg("assistant", "hi there")],
        "rejected": [msg("assistant", "bad")],
    }
    # Per example the longer sequence; per epoch both; trained: chosen and rejected.
    assert data.report["statistics"]["chars"] == {
        "per_example": {"min": 6, "median": 12.5, "p95": pytest.approx(18.35), "max": 19},
        "per_epoch": 19 + 14 + 6 + 5,
        "trained_per_epoch": 8 + 3 + 3 + 2,
        "trained_share": round(16 / 44, 4),
    }


def test_openai_preference_rows_share_the_canonical_shape(tmp_path: Path) -> None:
    line = {
        "input": {"messages": [msg("system", "be brief"), msg("user", "hello")]},
        "preferred_output": [msg("assistant", "hi there")],
        "non_preferred_output": [msg("assistant", "bad")],
    }
    data = preference(tmp_path, [line])
    assert data.valid, data.report["problems"]
    assert data.layout == "openai_preference"
    assert data.rows == [
        {
            "prompt": [msg("system", "be brief"), msg("user", "hello")],
            "chosen": [msg("assistant", "hi there")],
            "rejected": [msg("assistant", "bad")],
        }
    ]
    stats = data.report["statistics"]
    assert stats["role_counts"] == {"system": 1, "user": 1, "assistant": 1}
    # ChatML: prompt 5 + 4 tokens; chosen 2 + 3, rejected 1 + 3 tokens.
    tokens = preference(tmp_path, [line], tokenizer=chat_tokenizer()).report["statistics"]
    assert tokens["tokens"] == {
        "per_example": {"min": 14, "median": 14.0, "p95": 14.0, "max": 14},
        "per_epoch": 14 + 13,
        "trained_per_epoch": 3,
        "trained_share": round(3 / 27, 4),
    }
    too_long = preference(tmp_path, [line], tokenizer=chat_tokenizer(), max_seq_length=13)
    assert problems(too_long) == [(1, None, "too_long")]


def test_flat_preference_problems(tmp_path: Path) -> None:
    data = preference(
        tmp_path,
        [
            {"prompt": "hi", "chosen": "yes", "rejected": "no"},
            {"prompt": "hi", "chosen": "yes"},
            {"prompt": "", "chosen": None, "rejected": "no"},
            {"prompt": "hi", "chosen": "same", "rejected": "same"},
            {"prompt": "hi", "chosen": "<|im_start|>yes", "rejected": "no", "id": 4},
        ],
    )
    assert problems(data) == [
        (2, "rejected", "missing_field"),
        (3, "chosen", "wrong_type"),
        (3, "prompt", "empty_content"),
        (4, "rejected", "identical_outputs"),
        (5, "chosen", "special_token"),
        (5, "id", "unknown_column"),
    ]
    assert data.rows == [] and data.report["statistics"]["rows"] == 1


def test_openai_preference_problems(tmp_path: Path) -> None:
    good_input = {"messages": [msg("user", "hello")]}
    out = [msg("assistant", "hi")]
    other = [msg("assistant", "no")]
    data = preference(
        tmp_path,
        [
            {"input": good_input, "preferred_output": out, "non_preferred_output": other},  # 1
            {"input": good_input, "preferred_output": out},  # 2
            {"input": "hello", "preferred_output": out, "non_preferred_output": other},  # 3
            {"input": {"tools": []}, "preferred_output": out, "non_preferred_output": other},
            {
                "input": {"messages": [msg("user", "hello"), msg("assistant", "hi")]},
                "preferred_output": out,
                "non_preferred_output": other,
            },  # 5
            {
                "input": {"messages": [msg("user", "hello"), msg("robot", "hi")]},
                "preferred_output": out,
                "non_preferred_output": other,
            },  # 6
            {
                "input": good_input,
                "preferred_output": [msg("assistant", "hi"), msg("assistant", "hi")],
                "non_preferred_output": msg("assistant", "no"),
            },  # 7
            {
                "input": good_input,
                "preferred_output": [msg("user", "hi")],
                "non_preferred_output": [msg("assistant", " ")],
            },  # 8
            {"input": good_input, "preferred_output": out, "non_preferred_output": out},  # 9
            {
                "input": {"messages": [msg("system", "be brief")]},
                "preferred_output": out,
                "non_preferred_output": other,
            },  # 10
        ],
    )
    assert problems(data) == [
        (2, "non_preferred_output", "missing_field"),
        (3, "input", "wrong_type"),
        (4, "input.messages", "missing_messages"),
        (4, "input.tools", "unknown_column"),
        (5, "input.messages[1]", "role_order"),
        (6, "input.messages[1].role", "unknown_role"),
        (7, "non_preferred_output", "invalid_output"),
        (7, "preferred_output", "invalid_output"),
        (8, "non_preferred_output[0].content", "empty_content"),
        (8, "preferred_output[0].role", "invalid_output"),
        (9, "non_preferred_output", "identical_outputs"),
        (10, "input.messages", "no_user_message"),
    ]
    listed = {(p["line"], p["column"]): p["message"] for p in data.report["problems"]}
    assert "got 2 messages" in listed[(7, "preferred_output")]
    assert "got object" in listed[(7, "non_preferred_output")]
    assert "end with a user message" in listed[(5, "input.messages[1]")]


def test_a_line_in_another_layout_gets_its_line_number_and_both_layouts(tmp_path: Path) -> None:
    openai_pair = {
        "input": {"messages": [msg("user", "hello")]},
        "preferred_output": [msg("assistant", "hi")],
        "non_preferred_output": [msg("assistant", "no")],
    }
    data = chat(
        tmp_path,
        [SHORT, SHORT, openai_pair, {"prompt": "hello", "completion": "hi"}, SHORT],
    )
    assert problems(data) == [(3, None, "other_layout"), (4, None, "other_layout")]
    messages = [p["message"] for p in data.report["problems"]]
    assert "OpenAI's preference" in messages[0] and "chat (messages) file" in messages[0]
    assert "prompt/completion layout" in messages[1]

    flat = {"prompt": "hello", "chosen": "hi", "rejected": "no"}
    data = preference(tmp_path, [openai_pair, flat, SHORT])
    assert problems(data) == [(2, None, "other_layout"), (3, None, "other_layout")]
