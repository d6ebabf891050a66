"""The generation checks: the verdicts on given answers (JSON, expected keys, language), the
answers' token budget, and answers that end at the end-of-turn marker in a batch that ends
when all of them have."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tuneforge.training import llm
from tuneforge.training.generation_checks import (
    answer_budget,
    check_generations,
    generate_answers,
    judge,
    parse_json,
)

GERMAN = [{"role": "user", "content": "Schreibe einen kurzen Beitrag über unser neues Produkt."}]
ENGLISH = [{"role": "user", "content": "Write a short post about our new product for LinkedIn."}]


def test_json_answers_are_objects_or_arrays_with_a_fence_allowed() -> None:
    assert parse_json('{"post": "Hallo"}') == {"post": "Hallo"}
    assert parse_json('```json\n["#ki", "#news"]\n```') == ["#ki", "#news"]
    assert parse_json("42") is None and parse_json("Hallo Welt") is None
    assert parse_json('{"post": "Hallo"') is None


def test_expected_keys_come_from_the_spec_or_the_reference_answer() -> None:
    answer = '{"post": "Unser neues Produkt ist da, und es ist wirklich großartig."}'
    reference = '{"post": "…", "hashtags": ["#neu"]}'
    assert judge(GERMAN, answer, reference, None)["expected_keys"] is False
    assert judge(GERMAN, answer, reference, ["post"])["expected_keys"] is True
    # A reference in prose names no keys: the check does not apply.
    assert judge(GERMAN, answer, "Ein Beitrag.", None)["expected_keys"] is None


def test_the_answer_must_be_in_the_language_of_the_prompt() -> None:
    german = "Unser neues Produkt ist endlich da und wir freuen uns sehr darüber."
    english = "Our new product is finally here and we are very happy about it."
    assert judge(GERMAN, german, "", None)["language_match"] is True
    assert judge(GERMAN, english, "", None)["language_match"] is False
    assert judge(ENGLISH, english, "", None)["language_match"] is True
    # A JSON answer is judged by its words, not its keys and punctuation.
    assert (
        judge(GERMAN, f'{{"post": "{german}", "hashtags": ["#neu"]}}', "", None)["language_match"]
        is True
    )
    # Too short to tell: not counted either way.
    assert judge(GERMAN, '{"ok": true}', "", None)["language_match"] is None


def test_the_answer_budget_follows_the_longest_reference(tiny_qwen: Path) -> None:
    tokenizer = llm.load_chat_tokenizer(str(tiny_qwen))
    short, long = '{"intent": "card_arrival"}', '{"post": "' + "Guten Morgen! " * 20 + '"}'
    longest = len(tokenizer(long, add_special_tokens=False)["input_ids"])
    assert answer_budget(tokenizer, [short, long]) == -(-3 * longest // 2) + 16
    assert answer_budget(tokenizer, [short]) < answer_budget(tokenizer, [short, long])
    # A reference of one token still leaves room; a book does not get a book's budget.
    assert answer_budget(tokenizer, ["#"]) == 18  # ceil(1.5 x 1) + 16
    assert answer_budget(tokenizer, ["Guten Morgen! " * 2000]) == 1024


def scripted(model, tokenizer, end_id: int, filler_id: int) -> list[int]:
    """Make `model` answer the prompt "... say N words" with N filler tokens, then the
    end-of-turn marker, then the filler again (as a model that runs on would): its output
    head is overridden, step by step, the rest of generation is the real one. Returns the
    list that counts the forward passes."""
    wanted: list[int] = []
    calls: list[int] = []

    def read_prompts(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:  # the prompt's pass: a new batch
            texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
            wanted[:] = [int(re.search(r"say (\d+) words", t).group(1)) for t in texts]
            calls.clear()

    def answer(module, args, output):
        made = len(calls)
        calls.append(made)
        logits = torch.zeros_like(output)
        for row, n in enumerate(wanted):
            logits[row, -1, end_id if made == n else filler_id] = 100.0
        return logits

    model.register_forward_pre_hook(read_prompts, with_kwargs=True)
    model.lm_head.register_forward_hook(answer)
    return calls


def test_each_answer_stops_at_its_end_marker_and_the_batch_when_all_have(
    tiny_qwen: Path,
) -> None:
    tokenizer = llm.load_chat_tokenizer(str(tiny_qwen))
    model = llm.load_causal_lm(str(tiny_qwen), device="cpu")
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    filler_id = tokenizer("#", add_special_tokens=False)["input_ids"][0]
    calls = scripted(model, tokenizer, end_id, filler_id)
    # Prompts of different lengths: batched by length, answered in the given order.
    words = [3, 0, 5, 1]
    prompts = [
        [{"role": "user", "content": "Please " * i + f"say {n} words"}] for i, n in enumerate(words)
    ]
    answers, lengths = generate_answers(model, tokenizer, prompts, max_new_tokens=200)

    assert answers == ["#" * n for n in words]
    assert lengths == [n + 1 for n in words]  # the answer and its end-of-turn marker
    # The batch ended with its longest answer (5 tokens and the marker), not at 200 tokens.
    assert len(calls) == max(words) + 1


def test_the_checks_report_their_time_and_token_budget(tiny_qwen: Path) -> None:
    tokenizer = llm.load_chat_tokenizer(str(tiny_qwen))
    model = llm.load_causal_lm(str(tiny_qwen), device="cpu")
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    filler_id = tokenizer("#", add_special_tokens=False)["input_ids"][0]
    scripted(model, tokenizer, end_id, filler_id)
    # A model that runs past its reference (40 tokens) is cut at the budget that the
    # reference answers give (1.5 x 4 tokens + 16), not at a fixed allowance.
    examples = [([{"role": "user", "content": "say 40 words"}], "####")]
    report = check_generations(model, tokenizer, examples)
    budget = answer_budget(tokenizer, ["####"])
    assert report["max_new_tokens"] == budget < 40
    assert report["answer_tokens"]["max"] == budget == report["tokens"]
    assert report["seconds"] > 0 and report["json_valid_share"] == 0.0
