"""Text generation with causal LMs, for `POST /v1/chat/completions` and `/v1/completions`.

transformers' `generate` picks the tokens; it runs in a thread of its own and hands each new
token to a queue as it is produced, and the request's thread turns the tokens into text as
they arrive: a streamed answer is sent while it is written, and a whole answer is the same
pieces joined.

An answer ends (`finish_reason` "stop") at the model's end tokens (its eos token, the chat
template's end-of-turn marker, the eos ids of its `generation_config.json`) or at one of the
request's stop strings, which is cut off with whatever follows it; it ends with "length" when
`max_tokens` tokens were written. Text that may be the start of a stop string is held back
until it is known not to be one, so a streamed answer never shows part of a stop string.

Sampling follows OpenAI's parameters: temperature 0 is greedy decoding (transformers'
`do_sample=False`), otherwise tokens are sampled with the request's temperature and top_p.
What the request leaves out comes from the model's `generation_config.json` (temperature,
top_p, top_k, repetition penalty, ...), as in transformers, except that top-k is off unless
that file sets it: OpenAI samples from the whole distribution. A `seed` seeds torch's random
numbers before the answer is written; those are shared by the process, so an answer is
reproducible when no other sampled answer is written at the same time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from queue import Queue
from typing import Any

from tuneforge.errors import InvalidRequestError
from tuneforge.serving.adapters import AdapterHost
from tuneforge.serving.cache import device_allocated, footprint
from tuneforge.training.generation_checks import turn_end
from tuneforge.training.llm import compute_dtype, load_causal_lm, load_chat_tokenizer, render_ids

# What the token queue carries after the last token.
_END = None


@dataclass(frozen=True)
class Sampling:
    """How one answer is written. None takes the model's default (see the module's docstring)."""

    max_tokens: int
    temperature: float | None = None  # 0: greedy
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Finish:
    """The end of an answer: why it ended ("stop" or "length") and its length in tokens."""

    reason: str
    tokens: int


@dataclass
class Answer:
    """A whole answer."""

    text: str
    finish: Finish


class Generator:
    """A loaded causal LM with its chat tokenizer. One answer is written at a time (the
    host's lock): concurrent requests for the same model, or for models sharing its base,
    wait for each other.

    With `base`, `location` is one of our LoRA models whose base `base` has loaded: it loads
    its tokenizer and its adapters only, and answers with the base's weights and its adapters
    (see `serving.adapters`); `nbytes` counts the adapters alone. `dtype`: the weights'
    dtype, `serving_dtype(device)` unless given."""

    def __init__(
        self, location: Path, device: str, base: Generator | None = None, dtype: Any = None
    ):
        self.location = location
        self.tokenizer = load_chat_tokenizer(str(location))
        self.device = device
        if base is None:
            before = device_allocated(device)
            # Straight onto the GPU (device_map), never through the CPU's memory.
            model = load_causal_lm(
                str(location), device=device, dtype=dtype or serving_dtype(device, location)
            )
            model.to(device).eval()
            self.host = AdapterHost(model)
            self.adapter: str | None = None
            self.nbytes = footprint(model, device, before)
        else:
            self.host = base.host
            self.adapter = self.host.attach(location)
            self.nbytes = self.host.adapter_bytes(self.adapter)
        self.model = self.host.model
        end = turn_end(self.tokenizer)
        end_ids = self.tokenizer(end, add_special_tokens=False)["input_ids"] if end else []
        # A marker the tokenizer splits into several tokens (ChatML on a model without it)
        # cannot end `generate`: it is a stop string instead.
        self.end_text = end if len(end_ids) > 1 else None
        self.end_ids = end_token_ids(self.tokenizer, self.model, end_ids)
        self.context_length: int | None = getattr(
            self.model.config, "max_position_embeddings", None
        )

    def unload(self) -> None:
        """Free this model's adapters on the shared base (the cache unloads it); a request
        still holding it loads them again for its own answer. A whole model is freed by
        being let go instead."""
        if self.adapter is not None:
            self.host.detach(self.adapter)

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of `messages` as the chat template writes them, followed by the start of
        the assistant's turn. A template that refuses the messages (e.g. roles that do not
        alternate) is an InvalidRequestError."""
        from jinja2 import TemplateError

        try:
            return render_ids(self.tokenizer, messages, prompt=True)
        except TemplateError as error:
            raise InvalidRequestError(
                f"The model's chat template refuses these messages: {error}", param="messages"
            ) from error

    def text_prompt(self, text: str) -> list[int]:
        """Token ids of a plain prompt, with the special tokens the tokenizer adds (a BOS)."""
        return list(self.tokenizer(text)["input_ids"])

    def max_tokens(
        self, prompt_tokens: int, requested: int | None, prompt_param: str = "messages"
    ) -> int:
        """The answer's token limit: `requested`, or what the context leaves after the prompt.
        InvalidRequestError (naming `max_tokens`, or `prompt_param` when the prompt alone is
        too long) when prompt and answer do not fit the model's context."""
        if self.context_length is None:
            if requested is None:
                raise InvalidRequestError(
                    "The model does not say how long its context is: give max_tokens.",
                    param="max_tokens",
                )
            return requested
        left = self.context_length - prompt_tokens
        if left <= 0 or (requested is not None and requested > left):
            asked = f" and {requested} for the answer" if requested is not None else ""
            raise InvalidRequestError(
                f"The model's context is {self.context_length} tokens; the prompt takes "
                f"{prompt_tokens}{asked}.",
                param="max_tokens" if requested is not None and left > 0 else prompt_param,
            )
        return requested if requested is not None else left

    def stream(self, prompt_ids: list[int], sampling: Sampling) -> Iterator[str | Finish]:
        """Write an answer to `prompt_ids`: pieces of text as they are final, then its Finish.
        Closing the iterator early stops the generation."""
        tokens: Queue[Any] = Queue()
        done = threading.Event()
        thread = threading.Thread(
            target=self._generate,
            args=(prompt_ids, sampling, tokens, done),
            name="tuneforge-generate",
            daemon=True,
        )
        thread.start()
        try:
            yield from self._texts(tokens, sampling)
        finally:
            done.set()
            thread.join()  # a step at most: the model is free for the next answer

    def answer(self, prompt_ids: list[int], sampling: Sampling) -> Answer:
        """The whole answer to `prompt_ids` (the pieces of `stream`, joined)."""
        pieces: list[str] = []
        for piece in self.stream(prompt_ids, sampling):
            if isinstance(piece, Finish):
                return Answer("".join(pieces), piece)
            pieces.append(piece)
        raise AssertionError("an answer's stream ends with its Finish")

    def _generate(
        self, prompt_ids: list[int], sampling: Sampling, tokens: Queue[Any], done: threading.Event
    ) -> None:
        import torch
        from transformers import StoppingCriteriaList

        try:
            using = self.host.using(self.adapter, self.location)
            with using as model, torch.inference_mode():
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
                ids = torch.tensor([prompt_ids], device=self.device)
                model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    generation_config=self._config(sampling),
                    streamer=_TokenQueue(tokens),
                    stopping_criteria=StoppingCriteriaList([_WhenSet(done)]),
                )
        except Exception as error:  # the request's thread raises it
            tokens.put(error)
        finally:
            tokens.put(_END)

    def _config(self, sampling: Sampling) -> Any:
        from transformers import GenerationConfig

        greedy = sampling.temperature == 0
        return GenerationConfig(
            max_new_tokens=sampling.max_tokens,
            do_sample=not greedy,
            temperature=None if greedy else sampling.temperature,
            top_p=None if greedy else sampling.top_p,
            top_k=None if greedy else self.model.generation_config.top_k or 0,
            eos_token_id=self.end_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )

    def _texts(self, tokens: Queue[Any], sampling: Sampling) -> Iterator[str | Finish]:
        """Text pieces from the token queue: each piece final (no stop string can start in
        it, no character is still missing bytes), then the Finish."""
        stops = [*sampling.stop, *([self.end_text] if self.end_text else [])]
        ids: list[int] = []
        text, sent = "", 0
        while (token := tokens.get()) is not _END:
            if isinstance(token, BaseException):
                raise token
            ids.append(token)
            if token in self.end_ids:
                if len(text) > sent:
                    yield text[sent:]
                yield Finish("stop", len(ids))
                return
            text = self.tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            cut = first_stop(text, stops, sent)
            if cut is not None:
                if cut > sent:
                    yield text[sent:cut]
                yield Finish("stop", len(ids))
                return
            if text.endswith("\ufffd"):  # a character whose other bytes are still to come
                continue
            final = len(text) - stop_prefix_length(text, stops)
            if final > sent:
                yield text[sent:final]
                sent = final
        if len(text) > sent:
            yield text[sent:]
        yield Finish("length", len(ids))


def serving_dtype(device: str, location: Path | None = None) -> Any:
    """The dtype a model is served in: on a GPU the training compute dtype; on a CPU bfloat16
    for a model stored in bfloat16 when the CPU computes in it natively (AVX512-BF16 or AMX:
    on SmolLM2-135M it writes the prompt 2x faster and each token 1.2x faster than float32,
    see bench/README.md), else float32."""
    import torch

    if device != "cpu":
        return compute_dtype(device)
    if location is not None and _stored_dtype(location) == "bfloat16" and cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def _stored_dtype(location: Path) -> str | None:
    config_file = location / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    return config.get("dtype") or config.get("torch_dtype")


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether the CPU has bfloat16 instructions (Linux: its flags in /proc/cpuinfo)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return False
    flags = next(
        (line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), ""
    )
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def end_token_ids(tokenizer: Any, model: Any, end_ids: list[int]) -> list[int]:
    """The tokens that end an answer: eos, a one-token end-of-turn marker, and the eos ids of
    the model's generation config (Llama 3 has several)."""
    configured = model.generation_config.eos_token_id
    if not isinstance(configured, list):
        configured = [configured]
    found = {tokenizer.eos_token_id, *configured, *(end_ids if len(end_ids) == 1 else [])}
    return sorted(i for i in found if i is not None)


def first_stop(text: str, stops: list[str], start: int) -> int | None:
    """Where the first stop string in `text[start:]` begins, or None."""
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else None


def stop_prefix_length(text: str, stops: list[str]) -> int:
    """The length of the longest end of `text` that begins a stop string: held back, since
    the next tokens may complete it."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


class _TokenQueue:
    """A `generate` streamer that puts each new token id into a queue (the prompt, which
    `generate` hands over first, is skipped)."""

    def __init__(self, tokens: Queue[Any]):
        self.tokens = tokens
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.tokens.put(int(token))

    def end(self) -> None:
        pass


class _WhenSet:
    """A stopping criterion: stop once the reader of the answer no longer wants it."""

    def __init__(self, done: threading.Event):
        self.done = done

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full(
            (input_ids.shape[0],), self.done.is_set(), dtype=torch.bool, device=input_ids.device
        )
