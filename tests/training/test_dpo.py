"""The `dpo` kind on tiny models, in this process: preference training raises the margin of
the chosen over the rejected answers, and a paused run that is resumed ends with the weights
of a run that went straight through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import RecordingReporter, preference_pairs, run_context
from tuneforge.training import dpo
from tuneforge.training.checkpoints import complete_checkpoints, newest_complete

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def method(**params) -> dict:
    hyperparameters = {
        "n_epochs": 5,
        "batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": 5e-3,
        "lr_scheduler": "constant",
        "warmup_ratio": 0,
        "gradient_checkpointing": False,
        "logging_steps": 2,
        **params.pop("hyperparameters", {}),
    }
    params.setdefault("generation_checks", {"samples": 0})
    return {"type": "dpo", "dpo": {**params, "hyperparameters": hyperparameters}}


@pytest.mark.parametrize(
    ("arch", "tuning", "learning_rate"), [("qwen2", "lora", 5e-3), ("llama", "full", 1e-3)]
)
def test_dpo_raises_the_margin_of_the_chosen_answers(
    arch: str, tuning: str, learning_rate: float, tiny_qwen: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    base_dir = tiny_qwen if arch == "qwen2" else tiny_llama
    pairs = preference_pairs()
    ctx = run_context(
        tmp_path,
        base_dir,
        method(tuning=tuning, hyperparameters={"learning_rate": learning_rate, "beta": 0.1}),
        pairs,
        pairs,
        layout="preference",
    )
    result = dpo.run(ctx)

    assert result.primary_metric == "preference_accuracy" and result.steps == 10
    # Before: the random model prefers the short prose answers; after: the chosen JSON ones.
    before, after = result.baseline, result.evaluation
    assert before["preference_accuracy"] < 0.5 and after["preference_accuracy"] == 1.0
    assert after["logp_margin"] > before["logp_margin"] + 10, (before, after)
    # trl's own reward margins (relative to the base model) start at zero and grow.
    margins = ctx.reporter.logged("rewards/margins")
    eval_margins = ctx.reporter.logged("eval_rewards/margins")
    assert margins[-1] > margins[0] > 0 and eval_margins[-1] > 1.0, (margins, eval_margins)
    assert ctx.reporter.logged("eval_loss")[-1] < 0.6931  # below log 2, the loss at the start

    info = json.loads((ctx.output_dir / "tuneforge.json").read_text())
    assert info["kind"] == "dpo" and info["tuning"] == tuning
    saved = "adapter_model.safetensors" if tuning == "lora" else "model.safetensors"
    assert (ctx.output_dir / saved).is_file()
    # The saved model measures as it did at the end of training.
    again = dpo.evaluate_model(str(ctx.output_dir), "preference", pairs, "cpu")
    assert again["logp_margin"] == pytest.approx(after["logp_margin"], rel=1e-3)


def test_a_paused_dpo_run_resumes_to_the_same_weights(tiny_qwen: Path, tmp_path: Path) -> None:
    pairs = preference_pairs()
    spec = method(
        lora={"r": 8, "alpha": 16, "dropout": 0.1},  # dropout draws random numbers
        hyperparameters={"n_epochs": 3, "batch_size": 2, "logging_steps": 1},
    )
    straight = run_context(
        tmp_path / "straight", tiny_qwen, spec, pairs, pairs[:2], layout="preference", seed=7
    )
    expected = dpo.run(straight)
    assert expected.steps == 12

    work = tmp_path / "paused" / "work"
    paused = run_context(
        tmp_path / "paused",
        tiny_qwen,
        spec,
        pairs,
        pairs[:2],
        layout="preference",
        seed=7,
        work_dir=work,
        reporter=RecordingReporter(stop_at_step=5),
    )
    stopped = dpo.run(paused)
    assert stopped.stopped_early and stopped.steps == 5
    assert not paused.output_dir.exists()
    # The end of the first epoch's checkpoint, and the pause's.
    assert [p.name for p in complete_checkpoints(work / "checkpoints")] == [
        "checkpoint-4",
        "checkpoint-5",
    ]

    resumed = run_context(
        tmp_path / "paused",
        tiny_qwen,
        spec,
        pairs,
        pairs[:2],
        layout="preference",
        seed=7,
        work_dir=work,
        resume_from=newest_complete(work / "checkpoints"),
    )
    result = dpo.run(resumed)
    assert result.steps == 12 and not result.stopped_early
    a = load_file(straight.output_dir / "adapter_model.safetensors")
    b = load_file(resumed.output_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    assert result.evaluation == pytest.approx(expected.evaluation, abs=1e-5)
    # The base model's measurement was taken once, before the pause, and read back.
    assert result.baseline == expected.baseline
