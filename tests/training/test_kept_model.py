"""Which weights a run hands on (`TrainResult.keep`): the best checkpoint, the base when it
scored higher and the kind can hand it on, or the last step."""

from __future__ import annotations

from types import SimpleNamespace

from tuneforge.training.base import TrainResult


def trainer(best: str | None) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(best_model_checkpoint=best))


def result(base: float, tuned: float) -> TrainResult:
    found = TrainResult(primary_metric="ndcg@10", baseline={"ndcg@10": base, "mrr@10": 0.5},
                        evaluation={"ndcg@10": tuned, "mrr@10": 0.4}, steps=40)
    return found


def test_the_base_is_kept_when_it_scored_higher_and_counts() -> None:
    found = result(0.8, 0.7)
    assert found.keep(trainer("work/checkpoints/checkpoint-20"), True, base_counts=True)
    assert found.details["kept"] == {"model": "base", "step": 0}
    assert found.evaluation == {"ndcg@10": 0.8, "mrr@10": 0.5}  # the base's, as handed on


def test_the_best_checkpoint_otherwise() -> None:
    found = result(0.6, 0.7)
    assert not found.keep(trainer("work/checkpoints/checkpoint-20"), True, base_counts=True)
    assert found.details["kept"] == {"model": "best_checkpoint", "step": 20}
    # A kind whose baseline is no model to hand on (classification's majority guess).
    found = result(0.8, 0.7)
    assert not found.keep(trainer("work/checkpoints/checkpoint-30"), True, base_counts=False)
    assert found.details["kept"] == {"model": "best_checkpoint", "step": 30}
    assert found.evaluation["ndcg@10"] == 0.7


def test_the_last_step_without_best_model_selection() -> None:
    found = result(0.8, 0.7)
    assert not found.keep(trainer(None), False, base_counts=True)
    assert found.details["kept"] == {"model": "last_step", "step": 40}
