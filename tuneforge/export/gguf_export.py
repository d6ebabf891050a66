"""A GGUF export from start to checked file, without the job around it: load the model once,
write the GGUF file from the weights in memory, quantize, write the Modelfile, and verify the
file in llama.cpp against the same model.

Memory and disk, for a model of B bytes in bfloat16:
- the model is loaded once, in the type the base stores its weights in (LoRA adapters merged
  in that type, tensor by tensor), so it holds about B;
- the GGUF file is written from the weights in memory one tensor at a time (one tensor's
  copy at most), with no merged safetensors folder on disk;
- the same model then becomes the verification reference in place: its matrices stay 16-bit
  and are widened to float32 one matrix at a time as it computes (`verify._Float32Compute`).
So the process peaks at about B plus one float32 matrix, plus llama.cpp's mapping of the file
it reads; the disk holds the 16-bit file (about B) while a quantized one is written from it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

Note = Callable[[str], None]


def export_gguf(
    location: Path,
    staging: Path,
    work: Path,
    stem: str,
    quantization: str,
    conversations: list[list[dict[str, str]]],
    *,
    system: str | None,
    max_tokens: int,
    note: Note,
) -> tuple[str, dict[str, Any]]:
    """Write `<stem>-<quantization>.gguf` and its Modelfile into `staging` (scratch files in
    `work`), verified in llama.cpp on `conversations`; returns the file's name and the
    details of the export. Raises VerificationError when the file fails its checks."""
    from tuneforge.export import gguf_convert, llama, modelfile, verify
    from tuneforge.training.llm import load_causal_lm, load_chat_tokenizer

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = load_causal_lm(str(location), device="cpu", dtype="auto")
    tokenizer = load_chat_tokenizer(str(location))
    shape = modelfile.chat_shape(tokenizer)
    # What the converter reads besides the weights: the config and the tokenizer.
    described = work / "model"
    model.config.save_pretrained(described)
    tokenizer.save_pretrained(described)
    direct = quantization if quantization in gguf_convert.DIRECT_TYPES else None
    # The 16-bit type the file starts from: bf16 where the model holds bf16 weights.
    start_type = direct or ("bf16" if str(model.dtype) == "torch.bfloat16" else "f16")
    gguf_name = f"{stem}-{quantization}.gguf"
    unquantized = staging / gguf_name if direct else work / f"{stem}-{start_type}.gguf"
    note(f"Model loaded ({model.dtype}); converting to GGUF {start_type}.")
    vocab = gguf_convert.convert(
        described,
        unquantized,
        start_type,
        name=stem,
        chat_template=tokenizer.chat_template,
        stops=shape.stops,
        tensors=model.state_dict(),
    )
    if not direct:
        note(f"Quantizing to {quantization} with llama.cpp.")
        llama.quantize(unquantized, staging / gguf_name, quantization)
        unquantized.unlink()
    template = modelfile.go_template(shape, drop_bos=tokenizer.bos_token if vocab.add_bos else None)
    (staging / "Modelfile").write_text(
        modelfile.modelfile(gguf_name, template, shape.stops, system), encoding="utf-8"
    )
    note(
        f"Verifying {gguf_name} in llama.cpp on {len(conversations)} conversation(s) "
        f"(pre-tokenizer {vocab.pre!r}; minimum agreement "
        f"{verify.min_agreement(quantization):.0%})."
    )
    reference = verify.Reference.from_model(model, tokenizer, start_type, shape.stops)
    report = verify.verify_gguf(
        staging / gguf_name,
        reference,
        conversations,
        template,
        file_type=quantization,
        max_tokens=max_tokens,
    )
    shutil.rmtree(work, ignore_errors=True)
    types = llama.tensor_types(staging / gguf_name)
    details = {
        "gguf_file": gguf_name,
        "modelfile": "Modelfile",
        "file_type": quantization,
        "converted_from": start_type,
        "pre_tokenizer": vocab.pre,
        "tensor_types": types,
        "stop": shape.stops,
        "system": system,
        "ollama": f"ollama create {stem} -f Modelfile && ollama run {stem}",
    }
    return gguf_name, dict(details, verification=report)
