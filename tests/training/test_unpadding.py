"""Linear layers that skip padding: the same loss, logits and gradients as the plain
computation, dropout included, while the padding's rows are really not computed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tuneforge.training.unpadding import skip_padding

TEXTS = [
    "I still have not received my new card, what should I do?",
    "top up",
    "Why was I charged a fee for a transfer to a friend in another country last week?",
    "card declined",
    "How long does it take for a bank transfer from the UK to arrive?",
    "Can I change my PIN?",
]


def _classifier(model_id: str, seed: int = 0) -> Any:
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_pretrained(model_id, num_labels=3)


def _batch(model_id: str) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_id)
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([0, 1, 2, 1, 0, 2])
    return batch


def _step(model: Any, batch: dict[str, Any]) -> tuple[float, Any, dict[str, Any]]:
    """One training forward and backward, dropout on, with the same random numbers."""
    model.train()
    model.zero_grad()
    torch.manual_seed(1)
    out = model(**batch)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.item(), out.logits.detach().clone(), grads


def _assert_same(plain: tuple[float, Any, dict[str, Any]], skipped: tuple) -> None:
    assert skipped[0] == pytest.approx(plain[0], abs=1e-6)
    torch.testing.assert_close(skipped[1], plain[1], atol=1e-5, rtol=1e-5)
    assert plain[2].keys() == skipped[2].keys() and plain[2]
    for name, grad in plain[2].items():
        torch.testing.assert_close(skipped[2][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def _outputs_of(dense: Any) -> tuple[list[Any], Any]:
    seen: list[Any] = []
    return seen, dense.register_forward_hook(lambda module, args, out: seen.append(out.detach()))


def _assert_padding_skipped(plain: Any, skipped: Any, mask: Any) -> None:
    """Without skip_padding the padding's rows are computed (non-zero), with it left at zero."""
    padding = mask == 0
    assert plain[padding].abs().sum() > 0
    assert torch.count_nonzero(skipped[padding]) == 0
    assert torch.count_nonzero(skipped[~padding]) == skipped[~padding].numel()


def test_classifier_step_is_the_same_and_padding_rows_are_not_computed(model_id: str) -> None:
    model, batch = _classifier(model_id), _batch(model_id)
    assert 1 - batch["attention_mask"].float().mean().item() > 0.3  # a well padded batch
    seen, handle = _outputs_of(model.bert.encoder.layer[0].intermediate.dense)
    plain = _step(model, batch)
    with skip_padding(model) as applied:
        skipped = _step(model, batch)
    handle.remove()
    assert applied == "bert"
    _assert_same(plain, skipped)
    _assert_padding_skipped(seen[0], seen[1], batch["attention_mask"])
    # Afterwards every linear layer is its class's own again.
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_the_same_with_gradient_checkpointing_and_lora(model_id: str) -> None:
    """Checkpointing recomputes the forward in the backward; LoRA adds its own layers."""
    from tuneforge.training.classification import add_lora
    from tuneforge.training.spec import ClassificationMethodParams

    batch = _batch(model_id)
    results = []
    for skip in (False, True):
        model = add_lora(_classifier(model_id), ClassificationMethodParams().lora)
        model.gradient_checkpointing_enable({"use_reentrant": False})
        with skip_padding(model, enabled=skip) as applied:
            results.append(_step(model, batch))
        assert applied == ("bert" if skip else None)
    _assert_same(*results)


def test_a_batch_without_padding_and_evaluation_calls(model_id: str) -> None:
    from transformers import AutoTokenizer

    model = _classifier(model_id).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_id)
    unpadded = tokenizer(["one two three", "four five six"], padding=True, return_tensors="pt")
    assert bool(unpadded["attention_mask"].all())
    padded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = [model(**unpadded).logits, model(**padded).logits, model(**unpadded).logits]
        with skip_padding(model):
            got = [model(**unpadded).logits, model(**padded).logits, model(**unpadded).logits]
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_sentence_transformer_in_batch_negatives_loss_is_the_same(model_id: str) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    model = SentenceTransformer(model_id, device="cpu")
    loss = MultipleNegativesRankingLoss(model)
    anchors = model.tokenize(TEXTS[:3] + TEXTS[3:][::-1])
    positives = model.tokenize(TEXTS[::-1])
    # sentence-transformers calls the transformer's forward directly, past module hooks.
    seen, handle = _outputs_of(model[0].auto_model.encoder.layer[2].attention.self.query)
    results = []
    for skip in (False, True):
        model.train()
        model.zero_grad()
        torch.manual_seed(3)
        with skip_padding(model, enabled=skip) as applied:
            value = loss([dict(anchors), dict(positives)], None)
            value.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((value.item(), value.detach(), grads))
        assert applied == ("bert" if skip else None)
    handle.remove()
    _assert_same(*results)
    # The first call of each pass embeds the anchors.
    _assert_padding_skipped(seen[0], seen[2], anchors["attention_mask"])


def test_other_architectures_compute_as_before(tiny_qwen: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_qwen))
    with skip_padding(model) as applied:
        assert applied is None
        assert all("forward" not in m.__dict__ for m in model.modules())


def test_padding_on_the_left_is_computed_in_full(model_id: str) -> None:
    """The head reads the first token: a padded one must hold what the model computes."""
    from transformers import AutoTokenizer

    model = _classifier(model_id).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_id, padding_side="left")
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert not bool(batch["attention_mask"][:, 0].all())
    seen, handle = _outputs_of(model.bert.encoder.layer[0].output.dense)
    with torch.no_grad():
        expected = model(**batch).logits
        with skip_padding(model):
            got = model(**batch).logits
    handle.remove()
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(seen[1], seen[0])
