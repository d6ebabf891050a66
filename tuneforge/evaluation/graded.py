"""Measuring a chat model with a grader: its greedy answers to the data's prompts, graded as a
reinforcement job grades them (`tuneforge.graders`, OpenAI's grader types).

Evaluations (`POST /v1/evaluations` with `grader`) and promotion gates (`promote.grader`)
measure this way. The prompts come from the rows of either chat kind:

| rows                 | the prompt                           | `{{item.…}}`                      |
|----------------------|--------------------------------------|-----------------------------------|
| reinforcement        | its messages                         | the line as given                 |
| supervised (chat)    | the messages before the last answer  | `reference_answer`: that answer's |
|                      |                                      | text; `messages`: the prompt; and |
|                      |                                      | the line's `metadata` fields      |

The metrics are the reinforcement kind's: `reward_mean` (higher is better), `reward_std` and
`answer_tokens` (the answers' mean length in tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.config import Settings
from tuneforge.datasets.chat_render import message_text
from tuneforge.db.store import Store
from tuneforge.errors import InvalidRequestError
from tuneforge.graders.backends import check_job_grader
from tuneforge.graders.spec import templates
from tuneforge.graders.templates import MissingReference, references, resolve

PRIMARY_METRIC = "reward_mean"
GRADED_KINDS = ("supervised", "reinforcement")
DEFAULT_MAX_NEW_TOKENS = 256


def prompt_rows(kind: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of `kind` as prompts with the item the grader reads (see the module)."""
    if kind == "reinforcement":
        return [{k: r[k] for k in ("messages", "item", "tools") if k in r} for r in rows]
    prompts = []
    for row in rows:
        messages = row["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        item = {
            **(row.get("metadata") or {}),
            "messages": messages[:last],
            "reference_answer": message_text(messages[last]),
        }
        prompt = {"messages": messages[:last], "item": item}
        if row.get("tools"):
            prompt["tools"] = row["tools"]
        prompts.append(prompt)
    return prompts


def check_grader(
    store: Store, settings: Settings, grader: dict[str, Any], kind: str, param: str
) -> Any:
    """The parsed grader, refused as the grader endpoints refuse one (400 naming the field,
    403 for python graders while they are off), and for data that is no chat data."""
    if kind not in GRADED_KINDS:
        raise InvalidRequestError(
            f"A grader measures chat models: the data is {kind} data; give supervised (chat) "
            "or reinforcement data.",
            param=param,
        )
    return check_job_grader(store, settings, grader, param)


def check_references(grader: Any, rows: list[dict[str, Any]], param: str) -> None:
    """Every `{{item.…}}` of the grader is in every row's item; else the first one missing
    (InvalidRequestError naming the row and the field)."""
    wanted = [
        (where, reference)
        for where, template in templates(grader, param)
        for reference in references(template, where)
        if reference.namespace == "item"
    ]
    for n, row in enumerate(rows, start=1):
        for where, reference in wanted:
            try:
                resolve(reference, None, row["item"], where)
            except MissingReference as error:
                raise InvalidRequestError(f"Row {n}: {error.message}", param=where) from None


def graded_metrics(
    store: Store,
    settings: Settings,
    grader: Any,
    location: str | Path,
    rows: list[dict[str, Any]],
    device: str,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> dict[str, float]:
    """`reward_mean`, `reward_std` and `answer_tokens` of the model at `location` on prompt
    rows (see `prompt_rows`), its judges and embeddings the service's served models."""
    from tuneforge.graders.backends import ServedBackends
    from tuneforge.serving.cache import ModelCache
    from tuneforge.training import llm
    from tuneforge.training.reinforcement import reward_metrics

    cache = ModelCache(settings.serving_memory_mb * 1024 * 1024)
    backends = ServedBackends(store, settings, cache)
    tokenizer = llm.load_chat_tokenizer(str(location))
    model = llm.load_causal_lm(str(location), device=device).to(device)
    try:
        return reward_metrics(grader, backends, max_new_tokens)(model, tokenizer, rows)
    finally:
        cache.clear()
