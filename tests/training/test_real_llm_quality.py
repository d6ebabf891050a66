"""Quality on a real instruct model (SmolLM2-135M-Instruct), in this process: supervised
fine-tuning teaches it to answer held-out BANKING77 messages with exactly the task's JSON
object, and DPO on preference pairs of the same task, started from that model, makes it prefer
the right answers of held-out pairs.

A smaller version of `bench/llm_quality.py` (there with more rows, on the job engine, with the
figures in bench/README.md), sized for the suite: the models are trained once per module.
And the default learning rate those figures led to: higher for LoRA on small models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import banking_json as task
from tests.conftest import DATA
from tests.training.conftest import run_context
from tuneforge.training import dpo, llm, supervised

SIZES = {"train": 32, "validation": 2, "held_out": 16, "dpo_train": 16, "dpo_held_out": 16}
# The bench trains with the defaults on more rows; here fewer steps, so a higher learning rate.
SFT = {"n_epochs": 2, "learning_rate": 2e-3, "warmup_ratio": 0, "gradient_checkpointing": False}
DPO = {"learning_rate": 1e-4, "warmup_ratio": 0, "gradient_checkpointing": False}


@dataclass
class Trained:
    drawn: dict[str, list[task.Example]]
    base: dict[str, Any]
    sft_dir: Path
    sft: dict[str, Any]


def train(
    tmp: Path,
    model: str,
    kind: str,
    hyperparameters: dict[str, Any],
    rows: list,
    eval_rows: list,
    layout: str,
) -> Path:
    params = {"generation_checks": {"samples": 0}, "hyperparameters": hyperparameters}
    ctx = run_context(
        tmp, Path(model), {"type": kind, kind: params}, rows, eval_rows, layout=layout
    )
    (supervised if kind == "supervised" else dpo).run(ctx)
    return ctx.output_dir


@pytest.fixture(scope="module")
def trained(smollm2: str, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    from tuneforge.registry.models import cached_snapshot

    # Its folder, not its Hub id: the SFT model's tuneforge.json then names where its base is.
    folder = str(cached_snapshot(smollm2))
    drawn = task.draw(DATA, SIZES, seed=7)
    base, tokenizer = llm.load_causal_lm(folder, device="cpu"), llm.load_chat_tokenizer(folder)
    before = task.generation_quality(base, tokenizer, drawn["held_out"])
    del base
    sft_dir = train(
        tmp_path_factory.mktemp("sft"),
        folder,
        "supervised",
        SFT,
        [e.chat_row() for e in drawn["train"]],
        [e.chat_row() for e in drawn["validation"]],
        "chat",
    )
    model = llm.load_causal_lm(str(sft_dir), device="cpu")
    after = task.generation_quality(model, llm.load_chat_tokenizer(str(sft_dir)), drawn["held_out"])
    return Trained(drawn, before, sft_dir, after)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_sft_answers_held_out_prompts_with_the_tasks_json(trained: Trained) -> None:
    before, after = trained.base, trained.sft
    # The base model answers in prose; the fine-tuned one with exactly the two keys.
    assert after["exact_keys_share"] >= 0.8, after["examples"]
    assert after["exact_keys_share"] >= before["exact_keys_share"] + 0.5, (before, after)
    # Not a target, but a model that learnt the task gets some intents and most topics.
    assert after["topic_correct_share"] > before["topic_correct_share"], (before, after)


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_dpo_from_the_sft_model_prefers_the_right_answers_of_held_out_pairs(
    trained: Trained, tmp_path: Path
) -> None:
    intents = sorted({e.intent for e in task.read_examples(DATA)})
    pairs = task.preference_rows(trained.drawn["dpo_train"], intents)
    held_out = task.preference_rows(trained.drawn["dpo_held_out"], intents)
    dpo_dir = train(tmp_path, str(trained.sft_dir), "dpo", DPO, pairs, [], "preference")

    info = json.loads((dpo_dir / "tuneforge.json").read_text())
    assert info["kind"] == "dpo" and info["base_location"] == str(trained.sft_dir)
    tokenizer = llm.load_chat_tokenizer(str(dpo_dir))
    reference = llm.load_causal_lm(str(trained.sft_dir), device="cpu")
    policy = llm.load_causal_lm(str(dpo_dir), device="cpu")
    figures = task.preference_figures(policy, reference, tokenizer, held_out, beta=0.1)
    start, tuned = figures["start"], figures["tuned"]
    # DPO's implicit reward (policy against the SFT model) prefers the chosen answers ...
    assert tuned["reward_accuracy"] >= 0.75 and tuned["reward_margin"] > 0, figures
    # ... and so does the DPO model on its own, more than the SFT model did.
    assert tuned["logp_margin"] > start["logp_margin"], figures
    assert tuned["preference_accuracy"] >= start["preference_accuracy"], figures


def test_the_default_learning_rate_follows_the_models_size_and_the_tuning() -> None:
    from tuneforge.training.hyperparameters import (
        DPOHyperparameters,
        SupervisedHyperparameters,
        learning_rate,
    )

    auto = SupervisedHyperparameters.model_validate({"learning_rate": "auto"})
    assert auto.learning_rate is None
    assert learning_rate(auto, "lora", 134_515_008) == 1e-3  # SmolLM2-135M
    assert learning_rate(auto, "lora", 7_615_616_512) == 2e-4  # Qwen2.5-7B
    assert learning_rate(auto, "full", 134_515_008) == 2e-4
    given = SupervisedHyperparameters(learning_rate=5e-5)
    assert learning_rate(given, "lora", 134_515_008) == 5e-5
    assert learning_rate(DPOHyperparameters(), "lora", 134_515_008) == 5e-6
