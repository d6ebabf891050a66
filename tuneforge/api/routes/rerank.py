"""`POST /v1/rerank`: a reranker (cross-encoder) orders documents by their relevance to a
query, in the request and answer shape that Cohere, Jina and Hugging Face's
text-embeddings-inference share. It serves every reranker tuneforge knows by the names used
everywhere (`ft:…`, `NAME@alias`, `NAME@vN`, base cross-encoders on this machine)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from tuneforge.api.deps import ModelCacheDep, SettingsDep, StoreDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.rerank import (
    RerankDocument,
    RerankResponse,
    RerankResult,
    RerankUsage,
)
from tuneforge.errors import InvalidRequestError
from tuneforge.serving.loading import served_model
from tuneforge.serving.reranking import MAX_DOCUMENTS, Reranker

router = APIRouter(prefix="/v1", tags=["serving"])


class DocumentObject(BaseModel):
    model_config = ConfigDict(extra="allow")  # Cohere's and Jina's clients may add fields

    text: str


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        ..., min_length=1, max_length=255, description="A reranker: ft:…, NAME@alias, a base."
    )
    query: str = Field(..., description="What the documents are ranked for.")
    documents: Annotated[list[str | DocumentObject], Field(max_length=MAX_DOCUMENTS)] = Field(
        ..., description=f"Up to {MAX_DOCUMENTS} texts, or objects with a `text`."
    )
    top_n: int | None = Field(
        None, ge=1, description="Answer only the this many most relevant (default: all)."
    )
    return_documents: bool = Field(False, description="Give each result its document's text.")

    def texts(self) -> list[str]:
        """The documents' texts; InvalidRequestError naming the first empty one, or the query."""
        if not self.query.strip():
            raise InvalidRequestError("query is empty.", param="query")
        if not self.documents:
            raise InvalidRequestError("documents is empty: give at least one.", param="documents")
        texts = [d if isinstance(d, str) else d.text for d in self.documents]
        for i, text in enumerate(texts):
            if not text.strip():
                raise InvalidRequestError(f"documents[{i}] is empty.", param=f"documents[{i}]")
        return texts


@router.post("/rerank", response_model=RerankResponse, responses=error_responses(400, 404))
def rerank(
    store: StoreDep, settings: SettingsDep, cache: ModelCacheDep, request: RerankRequest
) -> RerankResponse:
    """Score every document against the query with a cross-encoder; the results come most
    relevant first, `top_n` of them, each with its document's index in the request."""
    texts = request.texts()
    reranker: Reranker = served_model(store, settings, cache, request.model, "reranker")
    scores, tokens = reranker.scores(request.query, texts)
    order = sorted(range(len(texts)), key=lambda i: -scores[i])[: request.top_n]
    results = [
        RerankResult(
            index=i,
            relevance_score=scores[i],
            **({"document": RerankDocument(text=texts[i])} if request.return_documents else {}),
        )
        for i in order
    ]
    return RerankResponse(
        id=f"rerank-{uuid.uuid4().hex}",
        model=request.model,
        results=results,
        usage=RerankUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
