"""The `supervised` kind on tiny Qwen2 and Llama models, in this process: the loss sees only
the answers, LoRA trains the adapters and leaves the base alone, full fine-tuning trains all
weights, merged weights give the logits of base + adapters, and a model that memorised JSON
answers passes the generation checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.conftest import json_chats, run_context
from tuneforge.errors import InvalidRequestError, QuantizationUnavailableError
from tuneforge.training import llm, supervised
from tuneforge.training.spec import JobCreate

pytestmark = pytest.mark.usefixtures("one_thread")


def method(**params) -> dict:
    """A supervised method that memorises a small set quickly on the CPU."""
    hyperparameters = {
        "n_epochs": 60,
        "batch_size": 8,  # the whole set in each step
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-2,
        "lr_scheduler": "constant",
        "warmup_ratio": 0,
        "gradient_checkpointing": False,
        "logging_steps": 5,
        "eval_steps": 1000,  # no evaluations during training: the test measures after it
        **params.pop("hyperparameters", {}),
    }
    params.setdefault("lora", {"r": 16, "alpha": 32})
    params.setdefault("generation_checks", {"samples": 4, "max_new_tokens": 64})
    return {"type": "supervised", "supervised": {**params, "hyperparameters": hyperparameters}}


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_labels_cover_only_the_trained_answers(
    arch: str, tiny_qwen: Path, tiny_llama: Path
) -> None:
    tokenizer = llm.load_chat_tokenizer(str(tiny_qwen if arch == "qwen2" else tiny_llama))
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello there", "weight": 0},
        {"role": "user", "content": "Hashtags?"},
        {"role": "assistant", "content": '{"hashtags": ["#ki"]}'},
    ]
    row = llm.tokenize_conversation(tokenizer, messages)
    ids, labels = row["input_ids"], row["labels"]
    assert len(ids) == len(labels)
    trained = [t for t, label in zip(ids, labels, strict=True) if label != llm.IGNORED]
    assert [label for label in labels if label != llm.IGNORED] == trained
    # Only the last answer, with the end-of-turn marker that teaches the model to stop; the
    # system and user turns, the template's markers and the answer with weight 0 are not.
    assert tokenizer.decode(trained) == '{"hashtags": ["#ki"]}<|im_end|>\n'
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(messages, tokenize=False)
    # The trained tokens are the end of the sequence, as a generation would produce them.
    assert ids[-len(trained) :] == trained


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_lora_learns_the_answers_and_leaves_the_base_weights(
    arch: str, tiny_qwen: Path, tiny_llama: Path, tmp_path: Path
) -> None:
    base_dir = tiny_qwen if arch == "qwen2" else tiny_llama
    rows = json_chats()
    ctx = run_context(tmp_path, base_dir, method(merge=True), rows, rows)
    result = supervised.run(ctx)

    assert not result.stopped_early and result.steps == 60
    assert result.primary_metric == "loss"
    # The validation loss on the answers falls from chance to almost nothing.
    before, after = result.baseline["loss"], result.evaluation["loss"]
    assert before > 4.0 and after < 0.5, (before, after)
    assert result.evaluation["perplexity"] < result.baseline["perplexity"]
    losses = ctx.reporter.logged("loss")
    assert len(losses) >= 4 and losses[-1] < losses[0] / 4, losses

    # The adapters were trained; the base model's weights are untouched.
    out = ctx.output_dir
    info = json.loads((out / "tuneforge.json").read_text())
    assert info["tuning"] == "lora" and info["base_model"] == "tuneforge-test/tiny"
    assert info["quantization"] == "none" and info["merged"] == "merged"
    adapter = load_file(out / "adapter_model.safetensors")
    lora_b = [name for name in adapter if "lora_B" in name]
    # Every linear layer but the head: q, k, v, o, gate, up and down in both layers.
    assert len(lora_b) == 2 * 7
    assert all(adapter[name].abs().max() > 0 for name in lora_b)  # they start at zero
    assert not any("lm_head" in name or "embed" in name for name in adapter)
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 16
    assert result.details["trainable_parameters"] == sum(t.numel() for t in adapter.values())

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    original = load_file(base_dir / "model.safetensors")
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), out)
    base_after = {
        k.removeprefix("base_model.model."): v
        for k, v in tuned.get_base_model().state_dict().items()
        if "lora" not in k
    }
    for name, tensor in original.items():
        module, leaf = name.rsplit(".", 1)
        key = f"{module}.base_layer.{leaf}"  # a layer with adapters wraps the original
        key = key if key in base_after else name
        assert torch.equal(base_after[key], tensor), name

    # The merged weights (merge: true) give the logits of base + adapters.
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    ids = torch.tensor(
        [
            llm.tokenize_conversation(llm.load_chat_tokenizer(str(out)), rows[0]["messages"])[
                "input_ids"
            ]
        ]
    )
    tuned.eval()
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, tuned(ids).logits, atol=1e-4)

    # The model learnt its JSON answers: greedy generation returns them, the checks say so.
    assert result.baseline["json_valid_share"] == 0.0
    assert result.evaluation["json_valid_share"] == 1.0
    assert result.evaluation["expected_keys_share"] == 1.0
    report = result.details["generation_checks"]["fine_tuned_model"]
    assert report["samples"] == 4 and report["expected_keys_checked"] == 4
    assert all(set(json.loads(e["answer"])) == {"topic", "hashtags"} for e in report["examples"])


@pytest.mark.slow
def test_full_fine_tuning_trains_every_weight(tiny_qwen: Path, tmp_path: Path) -> None:
    rows = json_chats()
    ctx = run_context(
        tmp_path,
        tiny_qwen,
        method(
            tuning="full",
            generation_checks={"samples": 0},
            hyperparameters={"n_epochs": 10, "learning_rate": 3e-3},
        ),
        rows,
        rows,
    )
    result = supervised.run(ctx)
    assert result.evaluation["loss"] < result.baseline["loss"] / 4, (
        result.baseline,
        result.evaluation,
    )
    out = ctx.output_dir
    assert json.loads((out / "tuneforge.json").read_text())["tuning"] == "full"
    assert not (out / "adapter_config.json").exists()
    original, trained = (
        load_file(tiny_qwen / "model.safetensors"),
        load_file(out / "model.safetensors"),
    )
    assert trained.keys() == original.keys()
    changed = [name for name in original if not torch.equal(original[name], trained[name])]
    assert "lm_head.weight" in changed and len(changed) == len(original)
    assert result.details["trainable_parameters"] == sum(t.numel() for t in original.values())
    # The saved folder is a model one can load and measure again, as the registry does.
    again = supervised.evaluate_model(str(out), "chat", rows, "cpu")
    assert again["loss"] == pytest.approx(result.evaluation["loss"], rel=1e-4)


@pytest.mark.slow
def test_packing_trains_too(tiny_llama: Path, tmp_path: Path) -> None:
    rows = json_chats()
    ctx = run_context(
        tmp_path,
        tiny_llama,
        method(
            generation_checks={"samples": 0},
            hyperparameters={
                "packing": True,
                "max_seq_length": 256,
                "n_epochs": 10,
                "batch_size": 1,
            },
        ),
        rows,
        rows,
    )
    result = supervised.run(ctx)
    # Packed, three conversations or so share a sequence of 256 tokens: fewer steps than
    # the 8 per epoch that one conversation per step would take.
    assert result.steps <= 10 * 4
    assert result.evaluation["loss"] < result.baseline["loss"] / 2
    assert "json_valid_share" not in result.evaluation


@pytest.mark.slow
def test_a_lora_model_is_the_base_of_the_next_job(tiny_qwen: Path, tmp_path: Path) -> None:
    """Training goes on from a fine-tuned model (seed 001's feedback loop): its adapters are
    merged into its base, and new adapters are trained on top."""
    rows = json_chats()
    short = method(generation_checks={"samples": 0}, hyperparameters={"n_epochs": 10})
    first = run_context(tmp_path / "first", tiny_qwen, short, rows, rows)
    after_first = supervised.run(first).evaluation["loss"]
    second = run_context(tmp_path / "second", first.output_dir, short, rows, rows)
    result = supervised.run(second)
    # The second job starts where the first ended, and gets further.
    assert result.baseline["loss"] == pytest.approx(after_first, rel=1e-3)
    assert result.evaluation["loss"] < after_first
    info = json.loads((second.output_dir / "tuneforge.json").read_text())
    assert info["base_location"] == str(first.output_dir)
    again = supervised.evaluate_model(str(second.output_dir), "chat", rows, "cpu")
    assert again["loss"] == pytest.approx(result.evaluation["loss"], rel=1e-3)


@pytest.mark.slow
def test_early_stopping_keeps_the_best_evaluation(tiny_qwen: Path, tmp_path: Path) -> None:
    """Trained on JSON answers, measured on a German chat it never sees: the validation loss
    falls for a while, then rises, and training stops with the best weights."""
    unseen = [
        {
            "messages": [
                {"role": "user", "content": "Wie geht es dir heute?"},
                {"role": "assistant", "content": "Sehr gut, danke der Nachfrage."},
            ]
        }
    ]
    ctx = run_context(
        tmp_path,
        tiny_qwen,
        method(
            generation_checks={"samples": 0},
            hyperparameters={"eval_steps": 5, "early_stopping_patience": 2, "learning_rate": 3e-2},
        ),
        json_chats(),
        unseen,
    )
    result = supervised.run(ctx)
    evaluations = ctx.reporter.logged("eval_loss")[1:]  # the first is the base model's
    assert result.steps < 60 and len(evaluations) == result.steps // 5
    best = min(evaluations)
    assert evaluations[-1] > best and evaluations.index(best) == len(evaluations) - 3
    assert result.evaluation["loss"] == pytest.approx(best, rel=1e-3)


def test_a_pause_at_an_epoch_end_resumes_to_the_same_adapter(
    tiny_qwen: Path, tmp_path: Path
) -> None:
    """At an epoch's end the straight run evaluates and checkpoints; the paused one only
    checkpoints. The evaluation must not move the random stream (dropout, order) the steps
    after it draw from, or the resumed run ends elsewhere."""
    from tests.training.conftest import RecordingReporter
    from tuneforge.training.checkpoints import newest_complete

    rows = json_chats()
    spec = method(lora={"r": 8, "alpha": 16, "dropout": 0.1}, generation_checks={"samples": 0},
                  hyperparameters={"n_epochs": 3, "batch_size": 2})
    straight = run_context(tmp_path / "straight", tiny_qwen, spec, rows, rows, seed=3)
    assert supervised.run(straight).steps == 12
    work = tmp_path / "paused" / "work"
    paused = run_context(tmp_path / "paused", tiny_qwen, spec, rows, rows, seed=3,
                         work_dir=work, reporter=RecordingReporter(stop_at_step=4))
    assert supervised.run(paused).steps == 4  # the first epoch's last step
    checkpoint = newest_complete(work / "checkpoints")
    assert checkpoint is not None and checkpoint.name == "checkpoint-4"
    resumed = run_context(tmp_path / "paused", tiny_qwen, spec, rows, rows, seed=3,
                          work_dir=work, resume_from=checkpoint)
    assert supervised.run(resumed).steps == 12
    a = load_file(straight.output_dir / "adapter_model.safetensors")
    b = load_file(resumed.output_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_quantization_needs_cuda(tiny_qwen: Path, tmp_path: Path) -> None:
    """On a machine without CUDA, 4-bit and 8-bit are refused before anything loads."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for device in ("cpu", "auto"):
        spec = JobCreate.model_validate(
            {
                "model": "org/m",
                "training_file": "file-x",
                "device": device,
                "method": {"type": "supervised", "supervised": {"quantization": "4bit"}},
            }
        )
        with pytest.raises(QuantizationUnavailableError) as refused:
            llm.check_quantization(spec)
        assert refused.value.param == "method.supervised.quantization"
        assert refused.value.code == "validation_error"
        assert "CUDA" in refused.value.message
    # device cuda is left to a CUDA worker; a worker without one refuses it clearly.
    rows = json_chats()
    ctx = run_context(tmp_path, tiny_qwen, method(quantization="8bit"), rows, rows)
    with pytest.raises(InvalidRequestError, match="needs a CUDA GPU") as worker_refused:
        supervised.run(ctx)
    assert worker_refused.value.param == "method.supervised.quantization"
    # auto means none here.
    assert (
        llm.resolve_quantization(
            ctx.spec.method.supervised.model_copy(update={"quantization": "auto"}),
            "cpu",
            str(tiny_qwen),
            "supervised",
        )
        == "none"
    )


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA (bitsandbytes) needs a CUDA GPU")
def test_qlora_on_cuda(tiny_qwen: Path, tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes: pip install '.[cuda]'")
    rows = json_chats()
    ctx = run_context(tmp_path, tiny_qwen, method(quantization="4bit"), rows, rows)
    ctx.device = "cuda"
    result = supervised.run(ctx)
    assert json.loads((ctx.output_dir / "tuneforge.json").read_text())["quantization"] == "4bit"
    assert result.evaluation["loss"] < result.baseline["loss"] / 4


def _padding_share(batches: list[dict]) -> float:
    """Padding tokens over all tokens in the batches the trainer feeds the model."""
    real = sum(int(b["attention_mask"].sum()) for b in batches)
    total = sum(b["attention_mask"].numel() for b in batches)
    return 1 - real / total


def test_length_grouped_batches_pad_far_less(tiny_qwen: Path, tmp_path: Path) -> None:
    """By default batches group similar lengths (the same examples, in other batches); a
    random order pads each batch to a long outlier."""
    rows = [
        {"messages": [{"role": "user", "content": "Hashtags for " + "the news " * (i % 13)},
                      {"role": "assistant", "content": "#news " * (1 + 3 * (i % 7))}]}
        for i in range(64)
    ]
    shares, seen = {}, {}
    for grouped in (True, False):
        ctx = run_context(
            tmp_path / str(grouped), tiny_qwen,
            method(hyperparameters={"group_by_length": grouped, "batch_size": 4}), rows, [])
        trainer, _, _ = supervised.build_trainer(ctx, ctx.spec.method.supervised)
        batches = list(trainer.get_train_dataloader())
        shares[grouped] = _padding_share(batches)
        seen[grouped] = sorted(
            tuple(ids[mask.bool()].tolist())
            for b in batches for ids, mask in zip(b["input_ids"], b["attention_mask"],
                                                   strict=True))
    assert seen[True] == seen[False]  # every example once, either way
    assert shares[False] > 0.25, shares  # the data really varies in length
    assert shares[True] < shares[False] / 2, shares
