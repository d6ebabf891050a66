"""OpenAI's ways of naming hyperparameters: "auto", learning_rate_multiplier, and the
deprecated top-level `hyperparameters`, moved into the method the data chose."""

from __future__ import annotations

import pytest

from tuneforge.training.hyperparameters import (
    DPOHyperparameters,
    SupervisedHyperparameters,
    learning_rate,
)
from tuneforge.training.spec import JobCreate

BASE = {"model": "org/model", "training_file": "file-1"}


def test_auto_takes_our_defaults_wherever_openai_allows_it() -> None:
    hp = DPOHyperparameters.model_validate(
        {
            "n_epochs": "auto",
            "batch_size": "auto",
            "learning_rate_multiplier": "auto",
            "beta": "auto",
        }
    )
    assert (hp.n_epochs, hp.batch_size, hp.beta, hp.learning_rate) == (1, 2, 0.1, 5e-6)


def test_a_multiplier_scales_the_kinds_default_learning_rate() -> None:
    # A fixed default is scaled at once; one that depends on the model when it is known.
    assert DPOHyperparameters(learning_rate_multiplier=2).learning_rate == pytest.approx(1e-5)
    supervised = SupervisedHyperparameters(learning_rate_multiplier=0.5)
    assert supervised.learning_rate is None
    assert learning_rate(supervised, "lora", 100_000_000) == pytest.approx(5e-4)
    assert learning_rate(supervised, "full", 100_000_000) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="not both"):
        SupervisedHyperparameters(learning_rate=1e-4, learning_rate_multiplier=2)


def test_top_level_hyperparameters_go_into_the_chosen_method() -> None:
    request = JobCreate.model_validate(
        BASE | {"hyperparameters": {"n_epochs": 4, "batch_size": "auto"}}
    )
    supervised = request.with_method("supervised")
    assert supervised.method.type == "supervised" and supervised.hyperparameters is None
    hp = supervised.method.supervised.hyperparameters  # type: ignore[union-attr]
    assert (hp.n_epochs, hp.batch_size) == (4, 2)
    # Stored and read back, the job is the same.
    again = JobCreate.model_validate(supervised.model_dump(mode="json"))
    assert again.model_dump() == supervised.model_dump()
    # A method the request names is kept, and the top-level values join its own.
    named = JobCreate.model_validate(
        BASE
        | {
            "hyperparameters": {"n_epochs": 4},
            "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3}}},
        }
    ).with_method("supervised")
    assert named.method.type == "dpo"
    assert named.method.dpo.hyperparameters.n_epochs == 4  # type: ignore[union-attr]
    assert named.method.dpo.hyperparameters.beta == 0.3  # type: ignore[union-attr]


def test_one_hyperparameter_in_both_places_is_refused_naming_both() -> None:
    request = JobCreate.model_validate(
        BASE
        | {
            "hyperparameters": {"batch_size": 4},
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 8}}},
        }
    )
    with pytest.raises(ValueError) as refused:
        request.with_method(None)
    assert "hyperparameters.batch_size and method.supervised.hyperparameters.batch_size" in str(
        refused.value
    )
