"""Checking a GGUF export before it is called done.

For a few prompts from the model's validation data: llama.cpp must read the rendered prompt as
the same tokens as the model's tokenizer, Ollama's TEMPLATE must render the same prompt as the
chat template, and llama.cpp's greedy continuation is compared with transformers' greedy
continuation of the same weights (rounded to the file's 16-bit type, so that only the engines
differ). f32/f16/bf16 files must generate identical tokens; for quantized files the agreement
is measured and reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import VerificationError
from tuneforge.export.llama import loaded
from tuneforge.export.modelfile import render_template


@dataclass
class Reference:
    """The merged model in transformers, with its weights as the GGUF file holds them."""

    model: Any
    tokenizer: Any
    stop_ids: set[int]

    @classmethod
    def load(cls, merged_dir: Path, tokenizer: Any, file_type: str, stops: list[str]) -> Reference:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            merged_dir, dtype=torch.float32, use_safetensors=True, trust_remote_code=False
        )
        if file_type in ("f16", "bf16"):
            rounded = torch.float16 if file_type == "f16" else torch.bfloat16
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    if parameter.ndim > 1:  # one-dimensional tensors stay float32 in the file
                        parameter.copy_(parameter.to(rounded).to(torch.float32))
                    del name
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

        with torch.inference_mode():
            out = self.model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=max_tokens,
                do_sample=False,
                eos_token_id=sorted(self.stop_ids) or None,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        return self.cut(out[0][len(ids) :].tolist())

    def cut(self, tokens: list[int]) -> list[int]:
        """The tokens up to and with the first stop token."""
        for i, token in enumerate(tokens):
            if token in self.stop_ids:
                return tokens[: i + 1]
        return tokens


def verify_gguf(
    gguf_path: Path,
    reference: Reference,
    conversations: list[list[dict[str, str]]],
    template: str,
    *,
    exact: bool,
    max_tokens: int,
) -> dict[str, Any]:
    """The verification report of `gguf_path`; raises VerificationError when a check fails."""
    tokenizer = reference.tokenizer
    samples = []
    matched = total = 0
    with loaded(gguf_path) as gguf_model:
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
                    f"{_first_difference(ids, expected_ids)}) for {prompt!r}."
                )
            want = reference.greedy(ids, max_tokens)
            got = reference.cut(gguf_model.greedy(ids, max_tokens))
            same = _common_prefix(want, got)
            matched += same
            total += max(len(want), 1)
            samples.append(
                {
                    "prompt": prompt,
                    "reference": tokenizer.decode(want),
                    "gguf": tokenizer.decode(got),
                    "reference_tokens": len(want),
                    "matching_tokens": same,
                    "identical": want == got,
                }
            )
            if exact and want != got:
                raise VerificationError(
                    f"llama.cpp's greedy output differs from transformers' at token {same}: "
                    f"{tokenizer.decode(got)!r} instead of {tokenizer.decode(want)!r}."
                )
    return {
        "prompts": len(conversations),
        "tokenization_identical": True,
        "template_identical": True,
        "identical": all(s["identical"] for s in samples),
        "token_agreement": round(matched / total, 4) if total else None,
        "max_new_tokens": max_tokens,
        "samples": samples,
    }


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _first_difference(a: list[int], b: list[int]) -> int:
    return _common_prefix(a, b)
