"""Checking a GGUF export before it is called done.

For a few prompts from the model's validation data: llama.cpp must read the rendered prompt as
the same tokens as the model's tokenizer, Ollama's TEMPLATE must render the same prompt as the
chat template, and llama.cpp's greedy continuation is compared with transformers' greedy
continuation of the same weights (rounded to the file's 16-bit type, so that only the engines
differ). llama.cpp must stop at every token the model stops at. f32/f16/bf16 files must
generate identical tokens, up to a near-tie (two next tokens within TIE_MARGIN logits, where
rounding may pick either); a quantized file must reach its type's minimum agreement and must
not fall into a repetition loop that the model does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import VerificationError
from tuneforge.export.llama import loaded
from tuneforge.export.modelfile import render_template

# The least greedy token agreement with transformers a quantized file must reach, by type (the
# share of reference tokens before the first difference, over the verification prompts).
# Measured on SmolLM2-135M-Instruct with 8 prompts of 48 tokens (bench/README.md, "GGUF
# export"): sound q8_0 files agreed 0.62-0.85, q6_k 0.85, q5_k_m 0.42-0.63, q4_k_m 0.18-0.67
# (free text on the base model is the low end, JSON answers of a fine-tune the high end);
# the broken q4_k_m files of issue 21 agreed 0.09-0.13. The bounds sit below the sound files;
# q3 and q2 (not measured there) get the lowest.
MIN_AGREEMENT = {
    "q8_0": 0.45,
    "q6_k": 0.30,
    "q5_k_m": 0.25,
    "q5_k_s": 0.25,
    "q5_0": 0.25,
    "q5_1": 0.25,
    "q4_k_m": 0.15,
    "q4_k_s": 0.15,
    "q4_0": 0.15,
    "q4_1": 0.15,
    "q3_k_l": 0.10,
    "q3_k_m": 0.10,
    "q3_k_s": 0.10,
    "q2_k": 0.05,
}


# Where the model's two best next tokens are this close (in logits), engines that round
# differently may pick either: a 16-bit file that first differs from transformers at such a
# near-tie still counts as identical (the continuations then part ways legitimately).
# Measured: SmolLM2's bf16 file parted from transformers on 3 of 16 prompts, each time at a
# margin of 0.002-0.010 logits (bench/README.md).
TIE_MARGIN = {"f32": 0.005, "f16": 0.05, "bf16": 0.05}


def min_agreement(file_type: str) -> float:
    """The verification threshold of `file_type`: 1.0 (identical) for f32, f16 and bf16."""
    return MIN_AGREEMENT.get(file_type, 1.0)


class _Float32Compute:
    """Inside it, matrix products and embedding look-ups compute in float32 with weights
    stored in 16 bits: the model computes as llama.cpp does with the file's weights, at the
    memory cost of the 16-bit weights (plus one weight matrix at a time in float32)."""

    def __enter__(self) -> _Float32Compute:
        import torch
        import torch.nn.functional as F
        from torch.overrides import TorchFunctionMode

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
                kwargs = kwargs or {}
                if func is F.linear and args[1].dtype != args[0].dtype:
                    args = tuple(a.float() if torch.is_tensor(a) else a for a in args)
                    kwargs = {k: v.float() if torch.is_tensor(v) else v for k, v in kwargs.items()}
                    return func(*args, **kwargs)
                if func is F.embedding:
                    return func(*args, **kwargs).float()
                return func(*args, **kwargs)

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)


@dataclass
class Reference:
    """The exported model in transformers, with its weights as the GGUF file holds them."""

    model: Any
    tokenizer: Any
    stop_ids: set[int]

    @classmethod
    def load(cls, merged_dir: Path, tokenizer: Any, file_type: str, stops: list[str]) -> Reference:
        """The model saved in `merged_dir`, loaded in the file's type."""
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            merged_dir,
            dtype={"f16": torch.float16, "bf16": torch.bfloat16}.get(file_type, torch.float32),
            use_safetensors=True,
            trust_remote_code=False,
        )
        return cls.from_model(model, tokenizer, file_type, stops)

    @classmethod
    def from_model(cls, model: Any, tokenizer: Any, file_type: str, stops: list[str]) -> Reference:
        """`model` (already in memory: the export loads it once) as the reference of a file of
        `file_type`: matrices rounded in place to the file's 16-bit type (or widened to
        float32), one-dimensional tensors float32 as the file stores them."""
        import torch

        stored = {"f16": torch.float16, "bf16": torch.bfloat16}.get(file_type, torch.float32)
        with torch.no_grad():
            for parameter in model.parameters():
                wanted = stored if parameter.ndim > 1 else torch.float32
                if parameter.dtype != wanted:
                    parameter.data = parameter.data.to(wanted)
        if model.config.to_dict().get("attn_logit_softcapping"):
            model.set_attn_implementation("eager")  # soft-capping is computed there only
        model.eval()
        stop_ids = {tokenizer.convert_tokens_to_ids(s) for s in stops}
        if tokenizer.eos_token_id is not None:
            stop_ids.add(tokenizer.eos_token_id)
        eos = model.generation_config.eos_token_id
        stop_ids |= set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        stop_ids.discard(tokenizer.unk_token_id)
        return cls(model, tokenizer, {int(i) for i in stop_ids if i is not None})

    def greedy(self, ids: list[int], max_tokens: int) -> list[int]:
        import torch

        with torch.inference_mode(), _Float32Compute():
            out = self.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=sorted(self.stop_ids) or None,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return self.cut(out[0][len(ids) :].tolist())

    def margin(self, ids: list[int], chosen: int, other: int) -> float:
        """How much more the model's next-token logit after `ids` favours `chosen` over
        `other`."""
        import torch

        with torch.inference_mode(), _Float32Compute():
            logits = self.model(torch.tensor([ids])).logits[0, -1].float()
        return float(logits[chosen] - logits[other])

    def cut(self, tokens: list[int]) -> list[int]:
        """The tokens up to and with the first stop token."""
        for i, token in enumerate(tokens):
            if token in self.stop_ids:
                return tokens[: i + 1]
        return tokens


def repetition_loop(tokens: list[int], max_period: int = 16, min_tokens: int = 12) -> bool:
    """Whether `tokens` end in a loop: a block of up to `max_period` tokens repeated at least
    three times in a row, over at least `min_tokens` tokens ("limited edition limited
    edition limited edition …")."""
    for period in range(1, max_period + 1):
        run = period
        for i in range(len(tokens) - period - 1, -1, -1):
            if tokens[i] != tokens[i + period]:
                break
            run += 1
        if run >= max(3 * period, min_tokens):
            return True
    return False


def verify_gguf(
    gguf_path: Path,
    reference: Reference,
    conversations: list[list[dict[str, str]]],
    template: str,
    *,
    file_type: str,
    max_tokens: int,
) -> dict[str, Any]:
    """The verification report of `gguf_path`, a file of `file_type`; raises
    VerificationError when a check fails: the template renders differently, llama.cpp
    tokenizes differently or does not stop at the model's stop tokens, a 16-bit or float32
    file generates differently (other than after a near-tie, TIE_MARGIN), a quantized file
    agrees less than `min_agreement(file_type)` or falls into a repetition loop that
    transformers does not."""
    tokenizer = reference.tokenizer
    threshold = min_agreement(file_type)
    exact = threshold >= 1.0
    samples = []
    matched = total = 0
    with loaded(gguf_path) as gguf_model:
        not_stopping = [
            tokenizer.convert_ids_to_tokens(i)
            for i in sorted(reference.stop_ids)
            if not gguf_model.is_end_of_generation(i)
        ]
        if not_stopping:
            raise VerificationError(
                f"llama.cpp would not stop generating at {', '.join(not_stopping)}, where "
                "the model stops."
            )
        for messages in conversations:
            prompt = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            rendered = render_template(template, messages)
            bos = tokenizer.bos_token or ""
            if rendered != prompt and not (bos and bos + rendered == prompt):
                raise VerificationError(
                    "The Modelfile TEMPLATE renders this conversation differently from the "
                    f"model's chat template: {rendered!r} instead of {prompt!r}."
                )
            expected_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            ids = gguf_model.tokenize(prompt)
            if ids != expected_ids:
                raise VerificationError(
                    "llama.cpp tokenizes the prompt differently from the model's tokenizer "
                    f"({len(ids)} vs {len(expected_ids)} tokens; first difference at token "
                    f"{common_prefix(ids, expected_ids)}) for {prompt!r}."
                )
            want = reference.greedy(ids, max_tokens)
            got = reference.cut(gguf_model.greedy(ids, max_tokens))
            same = common_prefix(want, got)
            matched += same
            total += max(len(want), 1)
            looping = repetition_loop(got) and not repetition_loop(want)
            tie = None
            if exact and want != got and same < min(len(want), len(got)):
                margin = reference.margin(ids + want[:same], want[same], got[same])
                tie = round(margin, 4) if margin <= TIE_MARGIN[file_type] else None
            samples.append(
                {
                    "prompt": prompt,
                    "reference": tokenizer.decode(want),
                    "gguf": tokenizer.decode(got),
                    "reference_tokens": len(want),
                    "matching_tokens": same,
                    "identical": want == got,
                    "near_tie_margin": tie,
                    "repetition_loop": looping,
                }
            )
            if exact and want != got and tie is None:
                raise VerificationError(
                    f"llama.cpp's greedy output differs from transformers' at token {same}: "
                    f"{tokenizer.decode(got)!r} instead of {tokenizer.decode(want)!r}."
                )
            if looping:
                raise VerificationError(
                    f"The {file_type} file falls into a repetition loop that the model does "
                    f"not: {tokenizer.decode(got)!r} instead of {tokenizer.decode(want)!r}."
                )
    agreement = round(matched / total, 4) if total else None
    if not exact and agreement is not None and agreement < threshold:
        raise VerificationError(
            f"The {file_type} file agrees with the model on {agreement:.1%} of the greedy "
            f"tokens over {len(conversations)} prompt(s), below the {threshold:.0%} a "
            f"{file_type} file must reach; choose a larger quantization (q8_0, q6_k)."
        )
    return {
        "prompts": len(conversations),
        "tokenization_identical": True,
        "template_identical": True,
        "stops_identical": True,
        "identical": all(s["identical"] for s in samples),
        "near_ties": sum(s["near_tie_margin"] is not None for s in samples),
        "token_agreement": agreement,
        "min_agreement": threshold,
        "max_new_tokens": max_tokens,
        "samples": samples,
    }


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many tokens `a` and `b` share from their start."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
