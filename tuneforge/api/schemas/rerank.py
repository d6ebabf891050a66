"""The answer of `/v1/rerank`, in the shape Cohere's, Jina's and text-embeddings-inference's
rerank endpoints share: results by relevance, each with its document's index."""

from __future__ import annotations

from pydantic import MISSING, Field

from tuneforge.api.schemas.base import Public


class RerankDocument(Public):
    text: str


class RerankResult(Public):
    index: int = Field(..., description="The document's position in the request's documents.")
    relevance_score: float = Field(
        ..., description="The reranker's score (a sigmoid of its logit: 0 to 1), higher first."
    )
    document: RerankDocument | MISSING = Field(
        MISSING, description="The document, with return_documents only."
    )


class RerankUsage(Public):
    prompt_tokens: int = Field(..., description="Tokens the model read (query and document).")
    total_tokens: int


class RerankResponse(Public):
    id: str
    model: str
    results: list[RerankResult]
    usage: RerankUsage
