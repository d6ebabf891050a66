"""Turning feedback into training data (seed 001's loop: rate, export, retrain).

| kind         | a row from                                                   | `source`      |
|--------------|--------------------------------------------------------------|---------------|
| `supervised` | an `up` answer: the conversation and the answer              | `up`          |
|              | an `edited` answer: the conversation and the corrected text  | `edited`      |
| `dpo`        | an `edited` answer: corrected (chosen) over original         | `edited`      |
|              | an `up` and a `down` answer to the same conversation         | `up_vs_down`  |

Rows that would repeat an earlier row are merged into it. The dataset's report keeps, under
`feedback_export`, the filters, counts, and for every line the feedback it came from.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneforge.config import Settings
from tuneforge.datasets.dedup import clean
from tuneforge.datasets.prepare import write_dataset
from tuneforge.db.records import Feedback
from tuneforge.db.store import Row, Store
from tuneforge.errors import InvalidRequestError

# The most up-versus-down pairs one conversation contributes (its answers may be many).
MAX_PAIRS_PER_PROMPT = 16


class FeedbackFilter(BaseModel):
    """Which feedback to use; every filter given must match."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, max_length=255, description="Exactly this model name.")
    registered_model: str | None = Field(
        None, max_length=100, description="Any version of this registered model."
    )
    since: float | None = Field(None, description="Given at or after (UNIX seconds).")
    until: float | None = Field(None, description="Given before (UNIX seconds).")


class FeedbackExport(FeedbackFilter):
    """`POST /v1/feedback/export`."""

    kind: Literal["supervised", "dpo"] = Field(
        "supervised", description="supervised: SFT examples; dpo: preference pairs."
    )


def _key(messages: list[dict[str, Any]]) -> str:
    return json.dumps([[m["role"], clean(m["content"])] for m in messages])


def feedback_rows(store: Store, where: FeedbackFilter) -> list[Feedback]:
    rows, _ = store.list_feedback(
        model=where.model,
        registered_model=where.registered_model,
        since=where.since,
        until=where.until,
        limit=None,
        oldest_first=True,
    )
    return rows


def build_rows(kind: str, feedback: list[Feedback]) -> tuple[list[Row], list[dict[str, Any]]]:
    """(canonical rows of `kind`, provenance of each: {line, source, feedback_ids})."""
    rows: list[Row] = []
    provenance: list[dict[str, Any]] = []
    seen: dict[str, int] = {}

    def add(row: Row, source: str, ids: list[str]) -> None:
        key = json.dumps(row, sort_keys=True)
        if key in seen:
            provenance[seen[key]]["feedback_ids"].extend(
                i for i in ids if i not in provenance[seen[key]]["feedback_ids"]
            )
            return
        seen[key] = len(rows)
        rows.append(row)
        provenance.append({"line": len(rows), "source": source, "feedback_ids": list(ids)})

    if kind == "supervised":
        for fb in feedback:
            if fb["rating"] in ("up", "edited"):
                answer = fb["corrected"] if fb["rating"] == "edited" else fb["output"]
                messages = [*fb["messages"], {"role": "assistant", "content": answer}]
                add({"messages": messages}, fb["rating"], [fb["id"]])
        return rows, provenance
    by_prompt: dict[str, dict[str, list[Row]]] = {}
    for fb in feedback:
        if fb["rating"] == "edited":
            add(_pair(fb["messages"], fb["corrected"], fb["output"]), "edited", [fb["id"]])
        by_prompt.setdefault(_key(fb["messages"]), {}).setdefault(fb["rating"], []).append(fb)
    for ratings in by_prompt.values():
        pairs = [
            (up, down)
            for up in ratings.get("up", [])
            for down in ratings.get("down", [])
            if clean(up["output"]) != clean(down["output"])
        ]
        for up, down in pairs[:MAX_PAIRS_PER_PROMPT]:
            add(
                _pair(up["messages"], up["output"], down["output"]),
                "up_vs_down",
                [up["id"], down["id"]],
            )
    return rows, provenance


def _pair(messages: list[dict[str, Any]], chosen: str, rejected: str) -> Row:
    return {
        "prompt": messages,
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def export_feedback(store: Store, settings: Settings, request: FeedbackExport) -> dict[str, Any]:
    """Write the feedback matching `request` as a new dataset of `request.kind`; returns
    {dataset (the file row), rows, feedback, by_source}. Nothing is written when the feedback
    gives fewer rows than a dataset needs."""
    feedback = feedback_rows(store, request)
    rows, provenance = build_rows(request.kind, feedback)
    ratings = Counter(fb["rating"] for fb in feedback)
    if len(rows) < settings.min_rows:
        needs = (
            "up or edited answers"
            if request.kind == "supervised"
            else "edited answers, or up and down answers to the same prompt"
        )
        raise InvalidRequestError(
            f"The feedback gives {len(rows)} {request.kind} example(s); a dataset needs at "
            f"least {settings.min_rows}. {request.kind} examples come from {needs} "
            f"(found: {dict(ratings) or 'no feedback'}).",
            param="kind",
            details={"ratings": dict(ratings), "rows": len(rows)},
        )
    by_source = dict(Counter(p["source"] for p in provenance))
    filters = request.model_dump(mode="json", exclude={"kind"}, exclude_none=True)
    name = (request.registered_model or request.model or "all").replace("/", "-")[:80]
    dataset = write_dataset(
        store,
        settings,
        f"feedback-{name}-{request.kind}.jsonl",
        request.kind,
        rows,
        {
            "feedback_export": {
                "kind": request.kind,
                "filters": filters,
                "feedback": len(feedback),
                "ratings": dict(ratings),
                "rows": len(rows),
                "by_source": by_source,
                "provenance": provenance,
            }
        },
    )
    return {
        "dataset": dataset,
        "rows": len(rows),
        "feedback": len(feedback),
        "by_source": by_source,
    }
