"""llama.cpp's name for how a tokenizer splits text before BPE (`tokenizer.ggml.pre`), found
by behaviour rather than by reading the tokenizer's settings.

Two tokenizers with the same split regex can still tokenize differently (digits split one by
one before the regex, merges ignored for whole words, a normalizer), and two different
settings can tokenize identically. So the names llama.cpp knows are tried in llama.cpp
itself: for each candidate, a GGUF file with the tokenizer keys only is loaded with
`vocab_only`, a probe text is tokenized, and the ids are compared with the Hugging Face
tokenizer's. The first name whose ids match wins; candidates are ordered by a cheap guess from
`tokenizer.json` so that the usual case costs one load. When no name matches, the export is
refused: the file would tokenize differently from the model it claims to be.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuneforge.errors import UnsupportedModelError
from tuneforge.export.verify import common_prefix

if TYPE_CHECKING:
    from tuneforge.export.gguf_vocab import Vocabulary

# Text meant to split differently under every pre-tokenizer: runs of digits of every length,
# whitespace runs of every kind before words and line ends, contractions in both cases,
# letters of several scripts next to digits and punctuation, emoji sequences (joiners,
# skin tones, flags), and code.
PROBE = (
    "Hello world! I'm here, you're there; they've gone, we'll see, she'd know, it's OK.\n"
    "DON'T SHOUT, I'VE SAID IT'S FINE. We'Ve a'lL 'RE 'd 'M\n"
    "7 42 314 2718 31415 926535 8979323846 3.14159 3..3 1,000,000 v2.0.1 0x1F 1e-9 ab12cd345\n"
    "two  spaces   three    four     five\t\ttabs \t mixed\n\n\n  \n   \n    indented\r\n\r\n"
    "Grüße aus Köln, Straße; déjà vu, œuvre, naïve café; привет мир, нещо на Български; "
    "Ελληνικά κείμενα; 中文：我想在北京工作123天～；日本語：こんにちは、世界！カタカナ; "
    "한국어: 안녕하세요; हिन्दी भाषा; العربية ١٢٣; ไทยภาษา; កាន់តែពិសេសអាច\n"
    "🚀 (rocket) 😶\u200d🌫️ 🦙🦙 ✅👍🏽 🇩🇪🇫🇷 ❤️‍🔥\n"
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": x ** 2}  # comment\n"
    "\tif (a&&b||c!=d) { x += 1; } else if (y <= 0x7f) { y--; }\n"
    "...!!!???---===___*** '''``` \"\"\" <<>> ~~~ @user #tag $5.99 100% a_b-c/d\\e |pipe|\n"
)

# The pre-tokenizer names of llama.cpp's converter, as of the llama.cpp that llama-cpp-python
# 0.3.36 bundles. Names the installed llama.cpp does not know fail to load and are skipped.
NAMES = (
    "llama-bpe",
    "qwen2",
    "smollm",
    "gpt-2",
    "deepseek-llm",
    "deepseek-coder",
    "deepseek-v3",
    "deepseek-r1-qwen",
    "falcon",
    "falcon3",
    "mpt",
    "starcoder",
    "refact",
    "command-r",
    "dbrx",
    "olmo",
    "jais",
    "jais-2",
    "tekken",
    "phi-2",
    "stablelm2",
    "gpt-4o",
    "chatglm-bpe",
    "glm4",
    "viking",
    "bloom",
    "poro-chat",
    "exaone",
    "exaone4",
    "minerva-7b",
    "codeshell",
    "smaug-bpe",
    "trillion",
    "superbpe",
    "gpt3-finnish",
    "chameleon",
    "megrez",
    "llama4",
    "pixtral",
    "seed-coder",
    "hunyuan",
    "hunyuan-dense",
    "kimi-k2",
    "grok-2",
    "bailingmoe",
    "bailingmoe2",
    "a.x-4.0",
    "midm-2.0",
    "lfm2",
    "mellum",
    "mellum2",
    "kormo",
    "youtu",
    "qwen35",
    "afmoe",
    "solar-open",
    "minimax-m2",
    "granite-docling",
    "gigachat",
    "roberta-bpe",
    "jina-v1-en",
    "jina-v2-en",
    "jina-v2-es",
    "jina-v2-de",
    "jina-v2-code",
    "tiny_aya",
    "kanana2",
)
# Split regexes as the model families write them in tokenizer.json, by llama.cpp's name.
KNOWN_SPLITS = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}
# GPT-2's split with every digit on its own first: SmolLM, StarCoder and kin, which llama.cpp
# knows under several names that tokenize alike.
SINGLE_DIGIT_GPT2 = ("smollm", "starcoder", "refact", "codeshell", "command-r")


def identify_pre_tokenizer(vocab: Vocabulary, tokenizer: Any) -> str:
    """The first llama.cpp pre-tokenizer name under which llama.cpp tokenizes PROBE as
    `tokenizer` does; UnsupportedModelError naming the closest candidate when none does."""
    import llama_cpp

    from tuneforge.export.gguf_vocab import backend_spec, write_vocabulary_only

    spec = backend_spec(tokenizer)
    want = list(tokenizer(PROBE, add_special_tokens=False)["input_ids"])
    closest: tuple[int, str] = (-1, "")
    with tempfile.TemporaryDirectory(prefix="tuneforge-vocab-") as tmp:
        for name in candidates(spec):
            path = Path(tmp) / "vocab.gguf"
            write_vocabulary_only(vocab, path, name)
            try:
                llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
            except ValueError:  # a name this llama.cpp does not know
                continue
            try:
                got = list(llm.tokenize(PROBE.encode("utf-8"), add_bos=False, special=False))
            finally:
                llm.close()
            if got == want:
                return name
            same = common_prefix(got, want)
            if same > closest[0]:
                closest = (same, name)
    detail = (
        f" (closest: {closest[1]!r}, which differs from token {closest[0]} of {len(want)})"
        if closest[1]
        else ""
    )
    raise UnsupportedModelError(
        "The tokenizer splits text in a way llama.cpp has no name for: no llama.cpp "
        f"pre-tokenizer tokenizes a probe text as the model's tokenizer does{detail}. A GGUF "
        "file would tokenize differently from the model, so it is not written.",
        param="model",
    )


def candidates(spec: dict[str, Any]) -> list[str]:
    """Every name in NAMES, the likely ones for `spec` (the tokenizer as transformers runs it,
    in tokenizer.json's form) first."""
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    patterns = [s.get("pattern", {}).get("Regex") for s in steps if s.get("type") == "Split"]
    single_digits = any(s.get("type") == "Digits" and s.get("individual_digits") for s in steps)
    gpt2_split = not patterns and any(
        s.get("type") == "ByteLevel" and s.get("use_regex", True) for s in steps
    )
    guesses = [KNOWN_SPLITS[p] for p in patterns if p in KNOWN_SPLITS]
    if single_digits:
        guesses += SINGLE_DIGIT_GPT2
    if gpt2_split:
        guesses.append("gpt-2")
    ordered = list(dict.fromkeys(guesses))
    return ordered + [name for name in NAMES if name not in ordered]
