"""Generation checks: answers to validation prompts, judged as seed 001's evaluation judges them.

For each prompt the model answers greedily; the report gives the share of answers that are
valid JSON (an object or an array), that carry the expected keys, that are written in the
prompt's language (langdetect), and the answers' lengths, with a few examples to read.

The checks run twice per job (base and fine-tuned model) and must stay a small part of it,
on a CPU too. So the prompts are answered in batches of similar lengths (left-padded, with
the KV cache), every answer stops at the model's end-of-turn marker and a batch ends once all
of its answers have; and an answer gets as many tokens as the longest reference answer needs
and half as many again (`answer_budget`), not a fixed allowance that a base model which
never stops would use up in full.

| check            | counted over                                                   |
|------------------|----------------------------------------------------------------|
| `json_valid`     | every answer                                                   |
| `expected_keys`  | answers whose keys are known: `expected_keys` of the spec, or  |
|                  | the keys of the reference answer when that is a JSON object    |
| `language_match` | answers where both the prompt and the answer have enough text  |
|                  | for the detector (for JSON answers: their string values)       |
"""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any

from tuneforge.datasets.chat_render import chat_text
from tuneforge.datasets.statistics import summary

Message = dict[str, Any]
# Answers generated together: on a CPU, batches beyond 8 add no throughput (SmolLM2-135M,
# one thread: about 45 tokens/s at 8, 16 and 32); a GPU does more at once.
CPU_BATCH = 8
GPU_BATCH = 32
# The default longest answer: the longest reference answer's tokens times ANSWER_ROOM, plus
# ANSWER_MARGIN (room for short references), and at most MAX_ANSWER_TOKENS.
ANSWER_ROOM = 1.5
ANSWER_MARGIN = 16
MAX_ANSWER_TOKENS = 1024
# Fewer letters than this make the language detector guess.
MIN_LETTERS_FOR_LANGUAGE = 20
SHOWN_EXAMPLES = 3
FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def check_generations(
    model: Any,
    tokenizer: Any,
    examples: list[tuple[list[Message], str]],
    *,
    max_new_tokens: int | None = None,
    expected_keys: list[str] | None = None,
) -> dict[str, Any]:
    """Answer each (prompt messages, reference answer) and judge the answers (see above).
    `max_new_tokens` None: the `answer_budget` of the reference answers. The report says
    how long the generation took (`seconds`) and the limit it had (`max_new_tokens`)."""
    prompts = [prompt for prompt, _ in examples]
    if max_new_tokens is None:
        max_new_tokens = answer_budget(tokenizer, [reference for _, reference in examples])
    started = time.perf_counter()
    answers, lengths = generate_answers(model, tokenizer, prompts, max_new_tokens)
    seconds = time.perf_counter() - started
    judged = [
        judge(prompt, answer, reference, expected_keys)
        for (prompt, reference), answer in zip(examples, answers, strict=True)
    ]
    report: dict[str, Any] = {
        "samples": len(judged),
        "seconds": round(seconds, 2),
        "tokens": sum(lengths),
        "max_new_tokens": max_new_tokens,
    }
    for check in ("json_valid", "expected_keys", "language_match"):
        verdicts = [bool(j[check]) for j in judged if j[check] is not None]
        report[f"{check}_checked"] = len(verdicts)
        report[f"{check}_share"] = sum(verdicts) / len(verdicts) if verdicts else None
    report["answer_chars"] = summary([len(a) for a in answers])
    report["answer_tokens"] = summary(lengths)
    report["examples"] = [
        {"prompt": prompt[-1]["content"][:500], "answer": answer[:500], "reference": ref[:500]}
        for (prompt, ref), answer in list(zip(examples, answers, strict=True))[:SHOWN_EXAMPLES]
    ]
    return report


def shares(report: dict[str, Any]) -> dict[str, float]:
    """The report's numbers that compare models: shares, and the median answer length."""
    found = {
        f"{check}_share": report[f"{check}_share"]
        for check in ("json_valid", "expected_keys", "language_match")
        if report.get(f"{check}_share") is not None
    }
    if report.get("answer_chars"):
        found["answer_chars_median"] = report["answer_chars"]["median"]
    return found


def answer_budget(tokenizer: Any, references: list[str]) -> int:
    """The longest answer the checks allow: ANSWER_ROOM times the longest reference answer's
    tokens, plus ANSWER_MARGIN, at most MAX_ANSWER_TOKENS. An answer as long as its
    reference, with its end-of-turn marker, always fits."""
    longest = max(
        (len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in references), default=0
    )
    return min(math.ceil(ANSWER_ROOM * longest) + ANSWER_MARGIN, MAX_ANSWER_TOKENS)


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: list[list[Message]],
    max_new_tokens: int,
    tools: list[Any] | None = None,
) -> tuple[list[str], list[int]]:
    """Greedy answers to chat prompts (`tools`: each prompt's declared tools), and their
    lengths in tokens (the end-of-turn marker included). An answer ends at the model's
    end-of-turn marker (as the chat template writes it) or its eos token; a batch ends when
    all of its answers have. Prompts are batched by length (less padding); the answers come
    back in the prompts' order."""
    import torch
    from transformers import GenerationConfig

    end = turn_end(tokenizer)
    end_ids = tokenizer(end, add_special_tokens=False)["input_ids"] if end else []
    stop = {tokenizer.eos_token_id, *([end_ids[0]] if len(end_ids) == 1 else [])}
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=sorted(i for i in stop if i is not None),
        pad_token_id=tokenizer.pad_token_id,
        # A marker the tokenizer splits into several tokens (ChatML on a model without it).
        stop_strings=[end] if len(end_ids) > 1 else None,
    )
    device = next(model.parameters()).device
    size = CPU_BATCH if device.type == "cpu" else GPU_BATCH
    tools = tools or [None] * len(prompts)
    texts = [chat_text(tokenizer, p, t, prompt=True) for p, t in zip(prompts, tools, strict=True)]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    was_training = model.training
    model.eval()
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answers: dict[int, str] = {}
    lengths: dict[int, int] = {}
    try:
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            batch = tokenizer(
                [texts[i] for i in chunk],
                add_special_tokens=False,
                padding=True,
                return_tensors="pt",
            )
            with torch.no_grad():
                output = model.generate(
                    **batch.to(device), generation_config=config, tokenizer=tokenizer
                )
            new = output[:, batch["input_ids"].shape[1] :].tolist()
            for i, row in zip(chunk, new, strict=True):
                row = _until_end(row, config.eos_token_id, tokenizer.pad_token_id)
                text = tokenizer.decode(row, skip_special_tokens=True)
                answers[i] = (text.split(end)[0] if end else text).strip()
                lengths[i] = len(row)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return [answers[i] for i in range(len(prompts))], [lengths[i] for i in range(len(prompts))]


def _until_end(row: list[int], stops: list[int], pad: int | None) -> list[int]:
    """An answer's tokens up to and with its first stop token; without one, up to the
    padding that fills the batch after it (a stop string) or the end."""
    for n, token in enumerate(row):
        if token in stops:
            return row[: n + 1]
    while row and row[-1] == pad:
        row = row[:-1]
    return row


def turn_end(tokenizer: Any) -> str:
    """What the chat template writes after an assistant's answer (e.g. `<|im_end|>`), or ''."""
    probe = "tuneforge-probe-answer"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "?"}, {"role": "assistant", "content": probe}],
        tokenize=False,
    )
    return str(text[text.rindex(probe) + len(probe) :].strip())


def parse_json(text: str) -> Any:
    """The JSON object or array an answer is (a ```json fence around it allowed), or None."""
    text = text.strip()
    fenced = FENCE.match(text)
    try:
        value = json.loads(fenced.group(1) if fenced else text)
    except ValueError:
        return None
    return value if isinstance(value, dict | list) else None


def judge(
    prompt: list[Message], answer: str, reference: str, expected_keys: list[str] | None
) -> dict[str, bool | None]:
    """One answer's verdicts; None where a check does not apply."""
    value = parse_json(answer)
    keys = expected_keys
    if keys is None:
        wanted = parse_json(reference)
        keys = list(wanted) if isinstance(wanted, dict) else None
    prompt_text = next(m["content"] for m in reversed(prompt) if m["role"] == "user")
    prompt_language = detect_language(prompt_text)
    answer_language = detect_language(answer_prose(answer, value))
    return {
        "json_valid": value is not None,
        "expected_keys": None
        if keys is None
        else isinstance(value, dict) and set(keys) <= set(value),
        "language_match": (
            None
            if prompt_language is None or answer_language is None
            else prompt_language == answer_language
        ),
    }


def answer_prose(answer: str, value: Any) -> str:
    """The words of an answer: of a JSON answer its string values, else the answer."""
    if value is None:
        return answer
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, str):
            found.append(node)
        elif isinstance(node, dict):
            for item in node.values():
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(value)
    return " ".join(found)


def detect_language(text: str) -> str | None:
    """The language of a text (ISO 639-1, e.g. `de`), or None when it is too short or the
    detector is unsure."""
    if sum(c.isalpha() for c in text) < MIN_LETTERS_FOR_LANGUAGE:
        return None
    from langdetect import DetectorFactory, detect_langs
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0  # the detector samples: the same text, the same answer
    try:
        best = detect_langs(text)[0]
    except LangDetectException:
        return None
    return str(best.lang) if best.prob >= 0.8 else None
