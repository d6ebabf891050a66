"""The answers of the OpenAI-compatible serving routes, field for field as OpenAI's:
`/v1/embeddings`, `/v1/chat/completions` and `/v1/completions` (without `stream`; streamed
answers are Server-Sent Events of OpenAI's chunk objects)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tuneforge.api.schemas.base import Public


class Embedding(Public):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(
        ..., description="The vector; with encoding_format base64, little-endian float32 bytes."
    )


class EmbeddingUsage(Public):
    prompt_tokens: int
    total_tokens: int


class CreateEmbeddingResponse(Public):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class CompletionUsage(Public):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionMessage(Public):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class ChatCompletionChoice(Public):
    index: int
    message: ChatCompletionMessage
    logprobs: None = None
    finish_reason: str = Field(..., description="stop, or length (max_tokens or the context).")


class ChatCompletion(Public):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatCompletionChoice]
    usage: CompletionUsage


class CompletionChoice(Public):
    index: int
    text: str
    logprobs: None = None
    finish_reason: str = Field(..., description="stop, or length (max_tokens or the context).")


class Completion(Public):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: CompletionUsage
