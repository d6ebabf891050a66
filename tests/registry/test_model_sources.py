"""Where a base model comes from offline: TUNEFORGE_MODEL_DIRS (`:`-separated or JSON) with
`org/name` folders or Hub cache folders copied as they are, and a model_not_found that says
how to make a model available."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.offline_models import MINILM
from tuneforge.config import Settings
from tuneforge.db.store import Store
from tuneforge.errors import ModelNotFoundError
from tuneforge.registry.models import resolve_model


def test_model_dirs_read_as_a_path_list_or_json(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("TUNEFORGE_MODEL_DIRS", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    assert Settings().model_dirs == [tmp_path / "a", tmp_path / "b"]
    monkeypatch.setenv("TUNEFORGE_MODEL_DIRS", json.dumps([str(tmp_path / "c")]))
    assert Settings().model_dirs == [tmp_path / "c"]


@pytest.mark.parametrize("layout", ["org/name", "models--org--name"])
def test_a_model_dir_holds_org_name_or_a_copied_cache_folder(
    tmp_path: Path, offline_hub: Path, layout: str
) -> None:
    cached = offline_hub / "hub" / ("models--" + MINILM.replace("/", "--"))
    models = tmp_path / "models"
    target = models / (MINILM if layout == "org/name" else cached.name)
    shutil.copytree(cached / "snapshots" if layout == "org/name" else cached, target,
                    symlinks=True)
    if layout == "org/name":  # the snapshot's files themselves
        snapshot = next(target.iterdir())
        for file in snapshot.iterdir():
            file.rename(target / file.name)
        snapshot.rmdir()
    settings = Settings(home=tmp_path / "data", model_dirs=[models])
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    try:
        source = resolve_model(store, settings, MINILM)
        assert source.is_local and Path(source.location).is_relative_to(models)
        assert (Path(source.location) / "config.json").is_file()
    finally:
        store.dispose()


def test_model_not_found_says_how_to_make_a_model_available(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "data")
    settings.ensure_dirs()
    store = Store(settings.db_url)
    store.create_schema()
    try:
        with pytest.raises(ModelNotFoundError) as missing:
            resolve_model(store, settings, "acme/no-such-model")
    finally:
        store.dispose()
    message = missing.value.message
    assert missing.value.param == "model"
    assert message.startswith("Model 'acme/no-such-model' is not available locally and the Hub "
                              "is offline. To make it available:")
    for hint in ("tuneforge models import", "DIR/acme/no-such-model", "TUNEFORGE_MODEL_DIRS",
                 "HF_HOME/hub", "tuneforge doctor"):
        assert hint in message
