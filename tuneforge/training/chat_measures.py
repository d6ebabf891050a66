"""How well a causal LM answers chat rows: per-token log-probabilities of the trained
answers, and from them validation loss, perplexity and token accuracy (supervised) or how
much the model prefers the chosen answers (dpo)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tuneforge.training.checkpoint_metrics import VALID_BATCH_ROWS
from tuneforge.training.llm import IGNORED, tokenize_conversation


def token_scores(model: Any, tokenized: list[dict[str, list[int]]]) -> list[tuple[float, int, int]]:
    """Per sequence: (summed log-probability of its labelled tokens, how many, how many the
    model ranks first). One sequence at a time: the logits of a long one are large."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scores = []
    with torch.no_grad():
        for row in tokenized:
            ids = torch.tensor([row["input_ids"]], device=device)
            labels = torch.tensor(row["labels"][1:], device=device)
            logits = model(input_ids=ids).logits[0, :-1].float()
            mask = labels != IGNORED
            logps = torch.log_softmax(logits[mask], dim=-1)
            picked = logps.gather(1, labels[mask].unsqueeze(1)).squeeze(1)
            correct = int((logits[mask].argmax(-1) == labels[mask]).sum())
            scores.append((float(picked.sum()), int(mask.sum()), correct))
    model.train(was_training)
    return scores


def chat_metrics(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Validation loss (mean negative log-likelihood per trained token), its perplexity and
    the share of trained tokens the model ranks first, over chat rows."""
    tokenized = [tokenize_conversation(tokenizer, r["messages"], r.get("tools")) for r in rows]
    scores = token_scores(model, tokenized)
    tokens = sum(n for _, n, _ in scores)
    if not tokens:
        return {}
    loss = -sum(s for s, _, _ in scores) / tokens
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "token_accuracy": sum(c for _, _, c in scores) / tokens,
    }


def valid_batch_measure(
    tokenizer: Any, rows: list[dict[str, Any]]
) -> Callable[[Any], dict[str, float]] | None:
    """For chat rows: a checkpoint's `valid_loss` and `valid_mean_token_accuracy`, on the
    first VALID_BATCH_ROWS validation rows (the same rows at every checkpoint; loss and token
    accuracy on the answers as `chat_metrics` measures them); None without validation rows."""
    batch = rows[:VALID_BATCH_ROWS]
    if not batch:
        return None

    def measure(model: Any) -> dict[str, float]:
        found = chat_metrics(model, tokenizer, batch)
        if not found:
            return {}
        return {"valid_loss": found["loss"], "valid_mean_token_accuracy": found["token_accuracy"]}

    return measure


def preference_metrics(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> dict[str, float]:
    """How much the model prefers the chosen answers, without a reference model: the share of
    pairs whose chosen answer is the more likely one (`preference_accuracy`) and the mean
    log-probability margin chosen minus rejected, in nats."""
    tokenized = [
        tokenize_conversation(tokenizer, r["prompt"] + answer)
        for r in rows
        for answer in (r["chosen"], r["rejected"])
    ]
    scores = [s for s, _, _ in token_scores(model, tokenized)]
    if not scores:
        return {}
    margins = [c - r for c, r in zip(scores[::2], scores[1::2], strict=True)]
    return {
        "preference_accuracy": sum(m > 0 for m in margins) / len(margins),
        "logp_margin": sum(margins) / len(margins),
        "chosen_logp": sum(scores[::2]) / len(margins),
        "rejected_logp": sum(scores[1::2]) / len(margins),
    }
