"""LoRA fine-tunes of SmolLM2-135M-Instruct that are told apart by their first word: each was
trained, a few steps, to answer every question with its own word ("ALPHA", "BRAVO", ...),
and the base answers with a sentence. Saved the way a supervised job saves a LoRA model
(`training.llm.save_trained`), registered the way a job publishes one (a `fine-tuned` row
in the models table, the folder under the data folder's `models/`).

Built once per machine (a lock keeps two test processes from building them at once) and
checked as they are built: each adapter's greedy answer must be its word.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.offline_models import SMOLLM2, smollm2_folder

WORDS = ("ALPHA", "BRAVO", "CHARLIE")
QUESTIONS = ["Who is there?", "Say a word."]
PROBE = [{"role": "user", "content": "Who are you?"}]
# The recipe: change it, and the folder name changes with it.
RECIPE = {"r": 8, "alpha": 16, "layers": list(range(22, 30)), "steps": 4, "lr": 1e-2, "seed": 0}
RECIPE_ID = "v1"


def smollm2_loras() -> dict[str, Path]:
    """The LoRA folder of each word (see the module's docstring)."""
    from filelock import FileLock

    root = Path(tempfile.gettempdir()) / "tuneforge-test-models"
    root.mkdir(parents=True, exist_ok=True)
    folder = root / f"smollm2-loras-{RECIPE_ID}"
    with FileLock(str(root / "smollm2-loras.lock")):
        if not (folder / "done").is_file():
            staging = folder.with_name(folder.name + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            for word in WORDS:
                _train(word, staging / word.lower())
            (staging / "done").write_text(json.dumps(RECIPE))
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
    return {word: folder / word.lower() for word in WORDS}


def register(home: Path, word: str, folder: Path, base_location: Path) -> str:
    """Publish the LoRA `folder` in the data folder `home` of a server, as a job would: its
    folder under `models/`, its row in the models table. Returns its model id."""
    from tuneforge.config import Settings
    from tuneforge.db.store import Store
    from tuneforge.training.llm import MODEL_INFO

    settings = Settings(home=home)
    model_id = f"ft:SmolLM2-135M-Instruct:user:{word.lower()}:{RECIPE_ID}"
    target = settings.models_dir / f"ftjob-{word.lower()}"
    shutil.copytree(folder, target, dirs_exist_ok=True)
    info = json.loads((target / MODEL_INFO).read_text())
    info["base_location"] = str(base_location)  # where this machine's base lies
    (target / MODEL_INFO).write_text(json.dumps(info, indent=2))
    Store(settings.db_url).upsert_model(
        {
            "id": model_id,
            "kind": "fine-tuned",
            "owned_by": "user",
            "created_at": time.time(),
            "base_model": SMOLLM2,
            "job_id": None,
            "path": str(target.resolve().relative_to(home.resolve())),
        }
    )
    return model_id


def _train(word: str, target: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.training.llm import load_chat_tokenizer, render_ids, save_trained
    from tuneforge.training.spec import JobCreate

    torch.manual_seed(RECIPE["seed"])
    base = smollm2_folder()
    tokenizer = load_chat_tokenizer(str(base))
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=RECIPE["r"],
        lora_alpha=RECIPE["alpha"],
        target_modules=["q_proj", "v_proj"],
        layers_to_transform=RECIPE["layers"],
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    ids, labels, mask = _batch(tokenizer, word)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=RECIPE["lr"]
    )
    for _ in range(RECIPE["steps"]):
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    prompt = torch.tensor([render_ids(tokenizer, PROBE, prompt=True)])
    with torch.inference_mode():
        written = model.generate(prompt, max_new_tokens=4, do_sample=False)
    answer = tokenizer.decode(written[0, prompt.shape[1] :], skip_special_tokens=True)
    assert answer.startswith(word), f"the {word} adapter answers {answer!r}: change the recipe"
    spec = JobCreate.model_validate(
        {
            "model": SMOLLM2,
            "training_file": "file-words",
            "method": {"type": "supervised", "supervised": {"lora": {"r": RECIPE["r"]}}},
        }
    )
    save_trained(
        model,
        tokenizer,
        target,
        spec=spec,
        params=spec.method.supervised,  # type: ignore[union-attr]
        model_location=str(base),
        quantization="none",
    )


def _batch(tokenizer: Any, word: str) -> tuple[Any, Any, Any]:
    """Every question answered with `word`: input ids, labels (the answer and its end of
    turn only) and the attention mask, padded on the right."""
    import torch

    from tuneforge.training.llm import tokenize_conversation

    rows = [
        tokenize_conversation(
            tokenizer,
            [{"role": "user", "content": q}, {"role": "assistant", "content": word}],
        )
        for q in QUESTIONS
    ]
    length = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id)
    labels = torch.full((len(rows), length), -100)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, :n] = torch.tensor(row["input_ids"])
        labels[i, :n] = torch.tensor(row["labels"])
        mask[i, :n] = 1
    return ids, labels, mask
