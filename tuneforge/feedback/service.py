"""Recording and reading feedback: a rating (`up`, `down`, `edited`) of a model's answer.

Feedback names a model tuneforge knows: a fine-tuned model (`ft:…`), a registry reference
(`NAME@alias`, `NAME@vN`), a registered name, or a base model it has trained from. The
registry name it belongs to is kept beside it, so that a registered model's feedback can be
exported and retrained on whichever version the answers came from.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneforge.datasets.dedup import clean
from tuneforge.db.store import Row, Store, new_id
from tuneforge.errors import ModelNotFoundError, NotFoundError
from tuneforge.registry.service import resolve_reference

RATINGS = ("up", "down", "edited")


class FeedbackMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(..., min_length=1, max_length=100_000)


class FeedbackCreate(BaseModel):
    """`POST /v1/feedback`: one rating of one answer."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        ..., min_length=1, max_length=255, description="The model that answered (id or alias)."
    )
    prompt: str | None = Field(
        None, min_length=1, max_length=100_000, description="The user's prompt."
    )
    messages: list[FeedbackMessage] | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Or the conversation up to the answer, ending with a user message.",
    )
    output: str = Field(..., min_length=1, max_length=100_000, description="The model's answer.")
    rating: Literal["up", "down", "edited"]
    corrected_output: str | None = Field(
        None, min_length=1, max_length=100_000, description="edited: the user's version."
    )
    metadata: dict[str, str] | None = Field(None, description="Up to 16 key-value pairs.")

    @model_validator(mode="after")
    def _consistent(self) -> FeedbackCreate:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt and messages")
        if self.messages is not None and self.messages[-1].role != "user":
            raise ValueError("messages must end with the user message the model answered")
        if self.rating == "edited":
            if self.corrected_output is None:
                raise ValueError("rating edited needs corrected_output")
            if clean(self.corrected_output) == clean(self.output):
                raise ValueError("corrected_output is the same as output")
        elif self.corrected_output is not None:
            raise ValueError("corrected_output belongs to rating edited only")
        if self.metadata and (
            len(self.metadata) > 16
            or any(len(k) > 64 or len(v) > 512 for k, v in self.metadata.items())
        ):
            raise ValueError("metadata: at most 16 keys of 64 and values of 512 characters")
        return self

    def conversation(self) -> list[dict[str, str]]:
        if self.messages is not None:
            return [m.model_dump() for m in self.messages]
        assert self.prompt is not None
        return [{"role": "user", "content": self.prompt}]


def registry_name_of(store: Store, model: str) -> str | None:
    """The registered model `model` belongs to; None for a base model. ModelNotFoundError
    when tuneforge does not know the model."""
    if "@" in model:
        resolve_reference(store, model)  # raises for unknown names and aliases
        return model.split("@")[0]
    if store.get_registered_model(model) is not None:
        return model
    if store.get_model(model) is None:
        raise ModelNotFoundError(
            f"No model {model!r}: name a fine-tuned model (ft:…), a registered model "
            "(NAME, NAME@alias, NAME@vN) or a base model that was trained from.",
            param="model",
        )
    version = store.version_of_model(model)
    return str(version["name"]) if version else None


def add_feedback(store: Store, request: FeedbackCreate) -> Row:
    """Record one rating; nothing is written for an unknown model."""
    return store.insert_feedback(
        {
            "id": new_id("fb"),
            "model": request.model,
            "registered_model": registry_name_of(store, request.model),
            "messages": request.conversation(),
            "output": request.output,
            "rating": request.rating,
            "corrected": request.corrected_output,
            "metadata": request.metadata,
            "created_at": time.time(),
        }
    )


def require_feedback(store: Store, feedback_id: str) -> Row:
    row = store.get_feedback(feedback_id)
    if row is None:
        raise NotFoundError(f"No feedback with id {feedback_id!r}.", param="feedback_id")
    return row
