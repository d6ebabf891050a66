"""`/v1/classifications`: a text-classification model labels texts (tuneforge's own endpoint;
OpenAI has none)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from tuneforge.api.deps import SettingsDep, StoreDep, UsageMeterDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.classifications import (
    Classification,
    ClassificationsPublic,
    ClassificationUsage,
    ClassScore,
)
from tuneforge.registry.models import local_model
from tuneforge.serving.classifier import MAX_INPUTS, loaded_classifier

router = APIRouter(prefix="/v1/classifications", tags=["classifications"])

Text = Annotated[str, Field(min_length=1)]


class ClassificationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        ..., min_length=1, max_length=255, description="A classification model, e.g. ft:..."
    )
    input: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)] = Field(
        ..., description=f"A text or a list of up to {MAX_INPUTS} texts."
    )
    top_k: int | None = Field(
        None, ge=1, le=100000, description="Scores of this many best classes (default: all)."
    )

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else self.input


@router.post("", responses=error_responses(400, 404))
def classify(
    store: StoreDep, settings: SettingsDep, meter: UsageMeterDep, request: ClassificationRequest
) -> ClassificationsPublic:
    """Label each text: `label` is the highest-scoring class; `labels` the predicted classes
    (that one, or for a multi-label model every class scoring at least 0.5); `scores` the
    classes with their probabilities, highest first."""
    with meter.track("/v1/classifications", request.model) as served:
        texts = request.texts()
        location = local_model(store, settings, request.model)
        classifier = loaded_classifier(request.model, location)
        served.found()
        predictions = classifier.predict(texts, request.top_k)
        tokens = sum(p.tokens for p in predictions)
        served.tokens(prompt=tokens)
    return ClassificationsPublic(
        model=request.model,
        multi_label=classifier.multi_label,
        data=[
            Classification(
                index=i,
                label=p.label,
                labels=p.labels,
                scores=[ClassScore(label=name, score=score) for name, score in p.scores],
            )
            for i, p in enumerate(predictions)
        ],
        usage=ClassificationUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
