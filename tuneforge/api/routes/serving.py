"""OpenAI-compatible serving: `/v1/embeddings` for embedding models, `/v1/chat/completions`
and `/v1/completions` for causal LMs: fine-tuned models of ours (`ft:…`, `NAME@alias`,
`NAME@vN`) and base models on this machine. The official `openai` client works against it.

Models load on first use and stay loaded under `TUNEFORGE_SERVING_MEMORY_MB` (see
`serving.cache`). `stream: true` sends Server-Sent Events in OpenAI's chunk format, ending
with `data: [DONE]`.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneforge.api.deps import ModelCacheDep, SettingsDep, StoreDep, UsageMeterDep
from tuneforge.api.errors import error_responses
from tuneforge.api.schemas.serving import (
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionMessage,
    Completion,
    CompletionChoice,
    CompletionUsage,
    CreateEmbeddingResponse,
)
from tuneforge.errors import InvalidRequestError
from tuneforge.monitoring.usage import ServedRequest, UsageMeter
from tuneforge.serving.embeddings import MAX_INPUTS
from tuneforge.serving.generation import Finish, Generator, Sampling
from tuneforge.serving.loading import served_model

router = APIRouter(prefix="/v1", tags=["serving"])
log = logging.getLogger(__name__)

# Answers per request (`n`, times the prompts of /v1/completions): they are written one after
# another (OpenAI allows n up to 128).
MAX_CHOICES = 16
MAX_STOPS = 4  # as OpenAI

# `stream: true` answers with Server-Sent Events of OpenAI's chunk objects.
SSE = {"text/event-stream": {"schema": {"type": "string"}}}

Text = Annotated[str, Field(min_length=1)]
TokenIds = Annotated[list[int], Field(min_length=1)]
TokenBatches = Annotated[list[TokenIds], Field(min_length=1)]
ModelName = Annotated[
    str, Field(min_length=1, max_length=255, description="A model id, `NAME@alias` or base model.")
]


# -- requests ----------------------------------------------------------------------------------


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelName
    input: (
        Text
        | Annotated[list[Text], Field(min_length=1, max_length=MAX_INPUTS)]
        | TokenIds
        | TokenBatches
    ) = Field(..., description=f"A text or a list of up to {MAX_INPUTS} texts.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="`base64`: each vector as little-endian float32 bytes, base64."
    )
    dimensions: int | None = Field(
        None, ge=1, description="Keep the first this many values, normalised again."
    )
    user: str | None = Field(None, description="Accepted and ignored.")


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = Field(False, description="A last chunk with `usage` before [DONE].")


# OpenAI's request fields that tuneforge does not implement, and what each would ask for: a
# request that uses one gets a sentence saying so (400), not pydantic's "Extra inputs are not
# permitted". A value that asks for nothing (null, false, 0, empty, a text response_format)
# passes.
UNSUPPORTED_FIELDS = {
    "tools": "tool calling",
    "tool_choice": "tool calling",
    "parallel_tool_calls": "tool calling",
    "functions": "function calling",
    "function_call": "function calling",
    "logprobs": "log probabilities",
    "top_logprobs": "log probabilities",
    "logit_bias": "logit_bias",
    "response_format": "structured output (response_format)",
    "modalities": "output modalities other than text",
    "audio": "audio output",
    "prediction": "predicted outputs",
    "reasoning_effort": "reasoning effort",
    "web_search_options": "web search",
    "echo": "echo",
    "best_of": "best_of",
    "suffix": "suffix (insertion)",
}
NOTHING_ASKED: tuple[Any, ...] = (None, False, 0, "", [], {}, {"type": "text"}, ["text"])


def refuse_unsupported_fields(data: Any) -> Any:
    """InvalidRequestError naming the first field of UNSUPPORTED_FIELDS that asks for
    something; `data` unchanged, less such fields that ask for nothing."""
    if not isinstance(data, dict):
        return data
    for name, feature in UNSUPPORTED_FIELDS.items():
        value = data.get(name)
        asks_nothing = (*NOTHING_ASKED, 1) if name == "best_of" else NOTHING_ASKED
        if name in data and not any(value == nothing for nothing in asks_nothing):
            raise InvalidRequestError(
                f"{name} is not supported: tuneforge's models do not do {feature}. Leave "
                f"{name} out.",
                param=name,
            )
    return {k: v for k, v in data.items() if k not in UNSUPPORTED_FIELDS}


class GenerationRequest(BaseModel):
    """What chat completions and completions share."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _unsupported_fields(cls, data: Any) -> Any:
        return refuse_unsupported_fields(data)

    model: ModelName
    max_tokens: int | None = Field(
        None, ge=1, description="Most tokens to write (default: what the context leaves)."
    )
    temperature: float | None = Field(
        None, ge=0, le=2, description="0: greedy; default: the model's, else 1."
    )
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling; default 1.")
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="Answers to write.")
    stop: Text | Annotated[list[Text], Field(max_length=MAX_STOPS)] | None = Field(
        None, description=f"Up to {MAX_STOPS} strings that end an answer (not included)."
    )
    seed: int | None = Field(None, description="Seeds sampling (best effort, as OpenAI).")
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0, ge=-2, le=2, description="Only 0 is supported.")
    frequency_penalty: float = Field(0, ge=-2, le=2, description="Only 0 is supported.")
    user: str | None = Field(None, description="Accepted and ignored.")

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def refuse_unsupported(self) -> None:
        """Parameters OpenAI has and tuneforge does not implement are refused, not ignored."""
        penalties = {
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }
        for name, value in penalties.items():
            if value:
                raise InvalidRequestError(
                    f"{name} is not supported; leave it out (or 0).", param=name
                )
        if self.stream_options is not None and not self.stream:
            raise InvalidRequestError(
                "stream_options is only allowed with stream: true.", param="stream_options"
            )

    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = Field(None, description="Accepted and ignored.")

    def for_template(self) -> dict[str, str]:
        """The message as chat templates read it: OpenAI's `developer` is their `system`,
        text parts are joined."""
        content = (
            self.content
            if isinstance(self.content, str)
            else "".join(part.text for part in self.content)
        )
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(
        None, ge=1, description="OpenAI's newer name for max_tokens; wins when both are given."
    )


class CompletionRequest(GenerationRequest):
    prompt: Text | Annotated[list[Text], Field(min_length=1)] | TokenIds | TokenBatches = Field(
        ..., description="A prompt or a list of prompts, written on as they are."
    )


# -- routes ------------------------------------------------------------------------------------


@router.post(
    "/embeddings", response_model=CreateEmbeddingResponse, responses=error_responses(400, 404)
)
def create_embeddings(
    store: StoreDep,
    settings: SettingsDep,
    cache: ModelCacheDep,
    meter: UsageMeterDep,
    request: EmbeddingRequest,
) -> JSONResponse:
    """Embed each text with a sentence-transformers model: the vectors
    `SentenceTransformer(model).encode(texts)` returns, in OpenAI's response shape."""
    with meter.track("/v1/embeddings", request.model) as served:
        texts = _texts(request.input, "input")
        embedder = served_model(store, settings, cache, request.model, "embedding")
        served.found()
        vectors, tokens = embedder.embed(texts, request.dimensions)
        served.tokens(prompt=tokens)
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(v, request.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    # Straight to JSON: FastAPI's encoder would walk every float of every vector.
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": SSE}, **error_responses(400, 404)},
)
def create_chat_completion(
    store: StoreDep,
    settings: SettingsDep,
    cache: ModelCacheDep,
    meter: UsageMeterDep,
    request: ChatCompletionRequest,
) -> ChatCompletion | StreamingResponse:
    """Answer a conversation with a causal LM; the prompt is the conversation as the model's
    chat template writes it, followed by the start of the assistant's turn."""
    with meter.track("/v1/chat/completions", request.model) as served:
        request.refuse_unsupported()
        generator: Generator = served_model(store, settings, cache, request.model, "causal_lm")
        served.found()
        return _chat_completion(generator, request, meter, served)


def _chat_completion(
    generator: Generator,
    request: ChatCompletionRequest,
    meter: UsageMeter,
    served: ServedRequest,
) -> ChatCompletion | StreamingResponse:
    prompt = generator.chat_prompt([m.for_template() for m in request.messages])
    served.tokens(prompt=len(prompt))
    wanted = request.max_completion_tokens or request.max_tokens
    sampling = _sampling(request, generator.max_tokens(len(prompt), wanted))
    head = _head("chatcmpl", "chat.completion", request.model)
    if request.stream:
        chunks = _chat_chunks(generator, prompt, sampling, request.n, head, request, served)
        return _event_stream(meter.streamed(served, chunks))
    choices, completion_tokens = [], 0
    for i in range(request.n):
        answer = generator.answer(prompt, _choice_sampling(sampling, i))
        completion_tokens += answer.finish.tokens
        choices.append(
            ChatCompletionChoice(
                index=i,
                message=ChatCompletionMessage(content=answer.text),
                finish_reason=answer.finish.reason,
            )
        )
    served.tokens(completion=completion_tokens)
    return ChatCompletion(**head, choices=choices, usage=_usage(len(prompt), completion_tokens))


@router.post(
    "/completions",
    response_model=Completion,
    responses={200: {"content": SSE}, **error_responses(400, 404)},
)
def create_completion(
    store: StoreDep,
    settings: SettingsDep,
    cache: ModelCacheDep,
    meter: UsageMeterDep,
    request: CompletionRequest,
) -> Completion | StreamingResponse:
    """Continue each prompt with a causal LM (no chat template: the text as it is, with the
    special tokens the tokenizer adds). Choice `i * n + j` is prompt i's answer j."""
    with meter.track("/v1/completions", request.model) as served:
        request.refuse_unsupported()
        texts = _texts(request.prompt, "prompt")
        if len(texts) * request.n > MAX_CHOICES:
            raise InvalidRequestError(
                f"At most {MAX_CHOICES} answers per request: {len(texts)} prompts x n={request.n}.",
                param="prompt",
            )
        generator: Generator = served_model(store, settings, cache, request.model, "causal_lm")
        served.found()
        return _completion(generator, texts, request, meter, served)


def _completion(
    generator: Generator,
    texts: list[str],
    request: CompletionRequest,
    meter: UsageMeter,
    served: ServedRequest,
) -> Completion | StreamingResponse:
    prompts = [generator.text_prompt(t) for t in texts]
    samplings = [
        _sampling(request, generator.max_tokens(len(p), request.max_tokens, "prompt"))
        for p in prompts
    ]
    head = _head("cmpl", "text_completion", request.model)
    prompt_tokens = sum(len(p) for p in prompts)
    served.tokens(prompt=prompt_tokens)
    if request.stream:
        chunks = _completion_chunks(
            generator, prompts, samplings, head, request, prompt_tokens, served
        )
        return _event_stream(meter.streamed(served, chunks))
    choices, completion_tokens = [], 0
    for index, (prompt, sampling, j) in enumerate(_choices_of(prompts, samplings, request.n)):
        answer = generator.answer(prompt, _choice_sampling(sampling, j))
        completion_tokens += answer.finish.tokens
        choices.append(
            CompletionChoice(index=index, text=answer.text, finish_reason=answer.finish.reason)
        )
    served.tokens(completion=completion_tokens)
    return Completion(**head, choices=choices, usage=_usage(prompt_tokens, completion_tokens))


# -- parts -------------------------------------------------------------------------------------


def _texts(value: str | list[str] | list[int] | list[list[int]], param: str) -> list[str]:
    """The texts of an `input` or `prompt`; token ids are refused."""
    if isinstance(value, str):
        return [value]
    if all(isinstance(item, str) for item in value):
        return [str(item) for item in value]
    raise InvalidRequestError(
        f"{param} as token ids is not supported; send the text instead.", param=param
    )


def _encoded(vector: Any, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]


def _sampling(request: GenerationRequest, max_tokens: int) -> Sampling:
    return Sampling(
        max_tokens=max_tokens,
        temperature=request.temperature,
        top_p=request.top_p,
        stop=request.stops(),
        seed=request.seed,
    )


def _choice_sampling(sampling: Sampling, j: int) -> Sampling:
    """The j-th answer to the same prompt: with a seed, seed + j (the same seed would write
    the same answer n times)."""
    return sampling if sampling.seed is None else replace(sampling, seed=sampling.seed + j)


def _choices_of(
    prompts: list[list[int]], samplings: list[Sampling], n: int
) -> Iterator[tuple[list[int], Sampling, int]]:
    """(prompt, sampling, j) for each answer: n per prompt, in choice order."""
    for prompt, sampling in zip(prompts, samplings, strict=True):
        for j in range(n):
            yield prompt, sampling, j


def _head(prefix: str, kind: str, model: str) -> dict[str, Any]:
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
    }


def _usage(prompt_tokens: int, completion_tokens: int) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )


def _chat_chunks(
    generator: Generator,
    prompt: list[int],
    sampling: Sampling,
    n: int,
    head: dict[str, Any],
    request: GenerationRequest,
    served: ServedRequest,
) -> Iterator[dict[str, Any]]:
    """`chat.completion.chunk`s: per answer, the role, the text as it is written, then the
    finish reason; with `include_usage`, a last chunk with the usage and no choices."""
    head = head | {"object": "chat.completion.chunk"}
    extra = {"usage": None} if request.include_usage() else {}
    completion_tokens = 0

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return head | {"choices": [choice]} | extra

    for i in range(n):
        yield chunk(i, {"role": "assistant", "content": ""})
        for piece in generator.stream(prompt, _choice_sampling(sampling, i)):
            if isinstance(piece, Finish):
                completion_tokens += piece.tokens
                served.tokens(completion=piece.tokens)
                yield chunk(i, {}, piece.reason)
            else:
                yield chunk(i, {"content": piece})
    if request.include_usage():
        usage = _usage(len(prompt), completion_tokens)
        yield head | {"choices": [], "usage": usage.model_dump()}


def _completion_chunks(
    generator: Generator,
    prompts: list[list[int]],
    samplings: list[Sampling],
    head: dict[str, Any],
    request: GenerationRequest,
    prompt_tokens: int,
    served: ServedRequest,
) -> Iterator[dict[str, Any]]:
    """`text_completion` chunks: the text of each answer as it is written, then an empty one
    with the finish reason; with `include_usage`, a last chunk with the usage."""
    extra = {"usage": None} if request.include_usage() else {}
    completion_tokens = 0
    for index, (prompt, sampling, j) in enumerate(_choices_of(prompts, samplings, request.n)):
        for piece in generator.stream(prompt, _choice_sampling(sampling, j)):
            text, finish = ("", piece.reason) if isinstance(piece, Finish) else (piece, None)
            if isinstance(piece, Finish):
                completion_tokens += piece.tokens
                served.tokens(completion=piece.tokens)
            choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
            yield head | {"choices": [choice]} | extra
    if request.include_usage():
        usage = _usage(prompt_tokens, completion_tokens)
        yield head | {"choices": [], "usage": usage.model_dump()}


def _event_stream(chunks: Iterator[dict[str, Any]]) -> StreamingResponse:
    return StreamingResponse(
        _sse(chunks),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(chunks: Iterator[dict[str, Any]]) -> Iterator[str]:
    """Each chunk as a `data:` event, then `data: [DONE]`. The response has begun by the
    time generation fails: the error is sent as an event of its own, as OpenAI does."""
    try:
        for chunk in chunks:
            yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
    except Exception as error:
        log.exception("generation failed while streaming")
        body = {"error": {"message": str(error), "type": "server_error", "code": "internal"}}
        yield f"data: {json.dumps(body)}\n\n"
        return
    yield "data: [DONE]\n\n"
