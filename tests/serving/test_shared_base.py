"""LoRA fine-tunes of one base served on one copy of its weights: SmolLM2-135M-Instruct and
three LoRA models of it that answer "ALPHA", "BRAVO" and "CHARLIE" (tests/serving/
smollm2_loras.py). In the process (the cache's accounting, the resident memory, eviction)
and on a real server through the official `openai` client (concurrent and streamed requests
for different adapters and for the base)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import Server
from tests.offline_models import SMOLLM2
from tests.serving.smollm2_loras import PROBE, WORDS, register, smollm2_loras
from tests.tiny_llm import build_tiny_llm
from tuneforge.registry.models import cached_snapshot
from tuneforge.serving.cache import ModelCache
from tuneforge.serving.generation import Generator, Sampling, serving_dtype

pytestmark = pytest.mark.slow

GREEDY = Sampling(max_tokens=8, temperature=0)


@pytest.fixture(scope="module")
def loras(smollm2: str) -> dict[str, Path]:
    return smollm2_loras()


@pytest.fixture(scope="module")
def base_folder(smollm2: str) -> Path:
    folder = cached_snapshot(smollm2)
    assert folder is not None
    return folder.resolve()


@pytest.fixture(scope="module")
def base_answer(base_folder: Path) -> str:
    """transformers' greedy answer of the plain base model (no peft anywhere) to PROBE."""
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.training.llm import load_chat_tokenizer, render_ids

    tokenizer = load_chat_tokenizer(str(base_folder))
    model = AutoModelForCausalLM.from_pretrained(
        base_folder, dtype=serving_dtype("cpu", base_folder)
    )
    ids = torch.tensor([render_ids(tokenizer, PROBE, prompt=True)])
    with torch.inference_mode():
        written = model.generate(ids, max_new_tokens=GREEDY.max_tokens, do_sample=False)
    return str(tokenizer.decode(written[0, ids.shape[1] :], skip_special_tokens=True))


def answer(generator: Generator) -> str:
    return generator.answer(generator.chat_prompt(PROBE), GREEDY).text


def resident_bytes(pid: str | int = "self") -> int:
    """The resident memory of a process (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# -- in the process ----------------------------------------------------------------------------


def test_n_lora_models_cost_one_base_plus_their_adapters(
    base_folder: Path, loras: dict[str, Path], base_answer: str
) -> None:
    import gc

    cache = ModelCache(10**12)
    base = cache.get(str(base_folder), lambda: Generator(base_folder, "cpu"))
    assert answer(base) == base_answer
    gc.collect()
    before = resident_bytes()
    tuned = {
        word: cache.get_adapter(
            str(folder),
            str(base_folder),
            lambda: Generator(base_folder, "cpu"),
            lambda host, folder=folder: Generator(folder, "cpu", base=host),
        )
        for word, folder in loras.items()
    }
    answers = {word: answer(generator) for word, generator in tuned.items()}
    gc.collect()
    grown = resident_bytes() - before

    assert answers == {word: word for word in WORDS}
    # The base, asked for by its own name, still answers as the plain model.
    assert answer(base) == base_answer
    assert all(generator.model is base.model for generator in tuned.values())
    for word, generator in tuned.items():
        # An adapter costs its own weights: the safetensors file less its header.
        weights = loras[word] / "adapter_model.safetensors"
        assert 0 < weights.stat().st_size - generator.nbytes < 64 * 1024
        assert generator.nbytes < base.nbytes / 100
    assert cache.loaded_bytes() == base.nbytes + sum(g.nbytes for g in tuned.values())
    # Each adapter used its base: the base is more recent than all but the newest adapter.
    alpha, bravo, charlie = (str(loras[w]) for w in WORDS)
    assert cache.loaded() == [alpha, bravo, str(base_folder), charlie]
    # Three merged copies would add three bases; the adapters (with their tokenizers and
    # peft's modules) add a part of one.
    print(f"base {base.nbytes / 2**20:.0f} MiB; RSS grew {grown / 2**20:.1f} MiB for 3 LoRAs")
    assert grown < base.nbytes / 2


def test_an_unloaded_adapter_leaves_its_base_and_a_base_takes_its_adapters_along(
    base_folder: Path, loras: dict[str, Path], tmp_path: Path
) -> None:
    base = Generator(base_folder, "cpu")
    alpha, bravo, charlie = (Generator(loras[w], "cpu", base=base) for w in WORDS)
    # The base and two adapters fit, the third adapter does not.
    cache = ModelCache(base.nbytes + alpha.nbytes + bravo.nbytes + charlie.nbytes // 2)
    key = str(base_folder)
    for word, generator in zip(WORDS, (alpha, bravo, charlie), strict=True):
        cache.get_adapter(str(loras[word]), key, lambda: base, lambda _, g=generator: g)
    # ALPHA, the least recently used, went (not the base, which its newer adapters use).
    assert cache.loaded() == [str(loras["BRAVO"]), key, str(loras["CHARLIE"])]
    assert base.host.loaded() == [bravo.adapter, charlie.adapter]
    # A request that got ALPHA before it went still gets ALPHA's answer, and leaves nothing.
    assert answer(alpha) == "ALPHA"
    assert base.host.loaded() == [bravo.adapter, charlie.adapter]
    assert answer(bravo) == "BRAVO"

    tiny_folder = build_tiny_llm(tmp_path / "tiny", "qwen2")
    tiny = Generator(tiny_folder, "cpu")
    cache.budget_bytes = base.nbytes  # the base alone, or the tiny model alone
    cache.get(str(tiny_folder), lambda: tiny)
    assert cache.loaded() == [str(tiny_folder)]
    assert cache.loaded_bytes() == tiny.nbytes


# -- on a real server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_server(
    tmp_path_factory: pytest.TempPathFactory, loras: dict[str, Path], base_folder: Path
) -> Iterator[tuple[Server, dict[str, str]]]:
    """A server whose data folder holds the three LoRA models, published as a job would."""
    home = tmp_path_factory.mktemp("lora-server") / "tuneforge-data"
    srv = Server(home)
    ids = {word: register(home, word, folder, base_folder) for word, folder in loras.items()}
    yield srv, ids
    srv.stop()


def test_concurrent_requests_for_different_adapters_each_get_their_own_answer(
    lora_server: tuple[Server, dict[str, str]], base_answer: str
) -> None:
    server, ids = lora_server
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="any", max_retries=0)

    def ask(model: str, stream: bool) -> str:
        kwargs: dict[str, Any] = {"messages": PROBE, "temperature": 0, "max_tokens": 8}
        if not stream:
            response = client.chat.completions.create(model=model, **kwargs)
            return response.choices[0].message.content or ""
        chunks = client.chat.completions.create(model=model, stream=True, **kwargs)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    # Loaded one after another first: the server's memory as each model arrives.
    rss = [resident_bytes(server.process.pid)]
    assert ask(SMOLLM2, stream=False) == base_answer
    rss.append(resident_bytes(server.process.pid))
    for word in WORDS:
        assert ask(ids[word], stream=False) == word
    rss.append(resident_bytes(server.process.pid))
    base_cost, loras_cost = rss[1] - rss[0], rss[2] - rss[1]
    print(f"server RSS: base +{base_cost / 2**20:.0f} MiB, 3 LoRAs +{loras_cost / 2**20:.0f} MiB")
    assert loras_cost < base_cost / 4

    # Then all at once, streamed and not, the base among them.
    asks = [(ids[w], w) for w in WORDS] * 2 + [(SMOLLM2, base_answer)] * 2
    started = threading.Barrier(len(asks))

    def run(i: int) -> str:
        model, _ = asks[i]
        started.wait(30)
        return ask(model, stream=i % 2 == 1)

    with ThreadPoolExecutor(len(asks)) as pool:
        got = list(pool.map(run, range(len(asks))))
    assert got == [expected for _, expected in asks]
