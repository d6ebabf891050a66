"""Hard-negative mining: pairs (anchor, positive) in; triplets (anchor, positive, negative) or
n-tuples (anchor, positive, negative_1 … negative_n) out.

`POST /v1/datasets/{id}/mine_negatives` embeds every anchor and every distinct positive of a
valid pair dataset with an embedding model (usually the base model of the job to come, or
any model tuneforge knows: a Hub id, `ft:…`, `name@alias`), and for each row picks, among the
other rows' positives, texts similar to the anchor that are not its positive, as
sentence-transformers' `mine_hard_negatives` does:

- candidates are ranked by cosine similarity to the anchor; the anchor's own positives (every
  row of the same anchor) and the anchor's text are left out, so rank 1 is the most similar
  other text;
- `range_min` skips the most similar candidates (often unlabelled positives), `range_max`
  caps how far down the ranking negatives are taken;
- `margin`: a negative must be at least this much less similar than the row's positive;
  `relative_margin`: at most (1 - relative_margin) times the positive's similarity;
- `num_negatives` per row, the most similar ones left (`sampling: top`) or drawn at random
  among those left (`sampling: random`, by `seed`).

The output is a new dataset (the source stays as it is). `output_format: triplet` (the
default) gives one row per negative, for embedding jobs (mnrl, cached_mnrl, triplet) and
reranker jobs; `n-tuple` one row per pair with its `num_negatives` negatives as columns,
for embedding jobs (mnrl, cached_mnrl) and reranker jobs (every listwise loss); rows with
fewer negatives found are left out of n-tuples, which need as many on every row. Its
report (`mining`) says how many negatives were found, for how many rows, and how hard they
are: mean similarity of positives and negatives, the gap, and the negatives' rank
distribution. Nothing is written when no negative is found, or when the
data has too few rows to find any in.
"""

from __future__ import annotations

import random
import statistics as stats
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneforge.config import Settings
from tuneforge.datasets.ingest import require_file
from tuneforge.datasets.prepare import read_dataset, write_dataset
from tuneforge.db.store import Row, Store
from tuneforge.errors import InvalidDatasetError, InvalidRequestError

# Rank buckets of the report's distribution: (first, last) ranks, last None: and beyond.
RANK_BUCKETS: tuple[tuple[int, int | None], ...] = (
    (1, 5),
    (6, 10),
    (11, 20),
    (21, 50),
    (51, 100),
    (101, None),
)
EXAMPLES = 5
QUERY_CHUNK = 256


class MiningRequest(BaseModel):
    """How to mine hard negatives for the dataset in the path."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str = Field(
        ...,
        min_length=1,
        max_length=255,
        description="The embedding model that judges similarity: the base model of the job "
        "to come, or any model tuneforge serves (Hub id, ft:..., name@alias).",
    )
    range_min: int = Field(
        0, ge=0, description="Skip this many of the most similar candidates (rank <= range_min)."
    )
    range_max: int = Field(
        100, ge=1, description="Take negatives from ranks up to this one (rank <= range_max)."
    )
    margin: float | None = Field(
        0.0,
        ge=0,
        le=2,
        description="A negative's cosine similarity must be at least this much below the "
        "positive's (null: no such bound).",
    )
    relative_margin: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="A negative's similarity must be at most (1 - this) times the positive's.",
    )
    num_negatives: int = Field(1, ge=1, le=50, description="Negatives (triplets) per row.")
    sampling: Literal["top", "random"] = Field(
        "top", description="top: the most similar negatives left; random: drawn among them."
    )
    output_format: Literal["triplet", "n-tuple"] = Field(
        "triplet",
        description="triplet: a row per negative; n-tuple: a row per pair with its "
        "num_negatives negatives (negative_1 … negative_n), rows with fewer left out.",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of sampling random.")
    batch_size: int = Field(64, ge=1, le=4096, description="Texts embedded per batch.")

    @model_validator(mode="after")
    def _range(self) -> MiningRequest:
        if self.range_max <= self.range_min:
            raise ValueError("range_max must be above range_min")
        return self


def _embed(model: Any, texts: list[str], batch_size: int) -> Any:
    return model.encode(
        texts,
        batch_size=batch_size,
        convert_to_tensor=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )


def mine(rows: list[Row], model: Any, request: MiningRequest) -> tuple[list[Row], dict[str, Any]]:
    """(triplet or n-tuple rows, report) for pair `rows`, embedded by `model`; see the
    module's text."""
    import torch

    anchors = sorted({r["anchor"] for r in rows})
    corpus = sorted({r["positive"] for r in rows})
    anchor_index = {a: i for i, a in enumerate(anchors)}
    corpus_index = {c: i for i, c in enumerate(corpus)}
    positives_of: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        positives_of[r["anchor"]].add(corpus_index[r["positive"]])
        if r["anchor"] in corpus_index:  # the anchor's own text is no negative of it
            positives_of[r["anchor"]].add(corpus_index[r["anchor"]])
    anchor_vectors = _embed(model, anchors, request.batch_size)
    corpus_vectors = _embed(model, corpus, request.batch_size)
    # Per anchor: candidates by similarity, its positives left out, ranks 1..range_max.
    depth = min(len(corpus), request.range_max + max(len(p) for p in positives_of.values()))
    ranked: dict[str, list[tuple[int, float]]] = {}
    for start in range(0, len(anchors), QUERY_CHUNK):
        block = anchor_vectors[start : start + QUERY_CHUNK] @ corpus_vectors.T
        scores, indices = torch.topk(block, k=depth, dim=1)
        for offset, (row_scores, row_indices) in enumerate(
            zip(scores.tolist(), indices.tolist(), strict=True)
        ):
            anchor = anchors[start + offset]
            own = positives_of[anchor]
            kept = [(i, s) for i, s in zip(row_indices, row_scores, strict=True) if i not in own]
            ranked[anchor] = kept[: request.range_max]
    rng = random.Random(request.seed)
    n_tuples = request.output_format == "n-tuple"
    out: list[Row] = []
    rows_short = 0
    positive_scores: list[float] = []
    negative_scores: list[float] = []
    negative_ranks: list[int] = []
    without: list[dict[str, Any]] = []
    rows_without = 0
    for number, r in enumerate(rows, start=1):
        a = anchor_index[r["anchor"]]
        p = corpus_index[r["positive"]]
        positive = float(anchor_vectors[a] @ corpus_vectors[p])
        bound = positive - request.margin if request.margin is not None else float("inf")
        if request.relative_margin is not None:
            bound = min(bound, positive * (1 - request.relative_margin))
        left = [
            (rank, i, s)
            for rank, (i, s) in enumerate(ranked[r["anchor"]], start=1)
            if rank > request.range_min and s <= bound
        ]
        if request.sampling == "random" and len(left) > request.num_negatives:
            left = sorted(rng.sample(left, request.num_negatives))
        chosen = left[: request.num_negatives]
        positive_scores.append(positive)
        short = n_tuples and len(chosen) < request.num_negatives
        if not chosen or short:
            rows_without += not chosen
            rows_short += bool(chosen and short)
            if len(without) < EXAMPLES:
                without.append({"row": number, "anchor": r["anchor"][:200],
                                "negatives_found": len(chosen)})
            continue
        if n_tuples:
            out.append({"anchor": r["anchor"], "positive": r["positive"],
                        **{f"negative_{n}": corpus[i] for n, (_, i, _) in
                           enumerate(chosen, start=1)}})
        for rank, i, s in chosen:
            if not n_tuples:
                out.append(
                    {"anchor": r["anchor"], "positive": r["positive"], "negative": corpus[i]}
                )
            negative_scores.append(s)
            negative_ranks.append(rank)
    report: dict[str, Any] = {
        "model": None,  # set by the caller, who resolved it
        "settings": request.model_dump(mode="json"),
        "rows_in": len(rows),
        "anchors": len(anchors),
        "corpus": len(corpus),
        "rows_with_negatives": len(rows) - rows_without - rows_short,
        "rows_without_negatives": rows_without,
        "rows_with_too_few_negatives": rows_short,
        "rows_without_examples": without,
        "negatives": len(negative_scores),
        "rows_out": len(out),
        "output_format": request.output_format,
        "columns": (
            ["anchor", "positive", *(f"negative_{n}" for n in range(1, request.num_negatives + 1))]
            if n_tuples else ["anchor", "positive", "negative"]
        ),
        "hardness": _hardness(positive_scores, negative_scores, negative_ranks),
    }
    return out, report


def _mean(values: list[float]) -> float | None:
    return round(stats.fmean(values), 4) if values else None


def _hardness(positive: list[float], negative: list[float], ranks: list[int]) -> dict[str, Any]:
    """How hard the negatives are: similarities to the anchor and ranks among candidates."""
    buckets = {}
    for first, last in RANK_BUCKETS:
        label = f"{first}-{last}" if last is not None else f"{first}+"
        buckets[label] = sum(1 for r in ranks if r >= first and (last is None or r <= last))
    return {
        "mean_positive_similarity": _mean(positive),
        "mean_negative_similarity": _mean(negative),
        "mean_gap": (round(stats.fmean(positive) - stats.fmean(negative), 4) if negative else None),
        "max_negative_similarity": round(max(negative), 4) if negative else None,
        "min_negative_similarity": round(min(negative), 4) if negative else None,
        "mean_rank": _mean([float(r) for r in ranks]),
        "median_rank": stats.median(ranks) if ranks else None,
        "rank_distribution": buckets,
    }


def check_enough(dataset_id: str, rows: list[Row], request: MiningRequest) -> None:
    """Refuse (400, nothing written) data too small to find negatives in: every row needs
    more than range_min other texts to take one from."""
    corpus = len({r["positive"] for r in rows})
    needed = request.range_min + 2  # its own positive, range_min skipped, one more
    if len(rows) < 2 or corpus < needed:
        raise InvalidRequestError(
            f"Dataset {dataset_id} has {len(rows)} row(s) with {corpus} distinct positive(s); "
            f"mining with range_min={request.range_min} needs at least {needed} distinct "
            "positives (each row's own, range_min skipped, one to take). Add rows or lower "
            "range_min.",
            param="range_min" if len(rows) >= 2 and request.range_min else "id",
            details={"rows": len(rows), "distinct_positives": corpus, "needed": needed},
        )


def mine_dataset(
    store: Store,
    settings: Settings,
    dataset_id: str,
    request: MiningRequest,
    load: Callable[[str], Any],
) -> dict[str, Any]:
    """Mine `dataset_id` (pairs) into a new triplet or n-tuple dataset; {dataset, report}.
    `load(name)` gives the embedding model as served (`serving.embeddings.Embedder`).
    Nothing is written when the dataset is no valid pair dataset, too small, or yields too
    few negatives."""
    kind, _, rows = read_dataset(store, settings, dataset_id, "id")
    layout = require_file(store, dataset_id)["report"].get("layout")
    if kind != "embedding" or layout != "pair":
        raise InvalidDatasetError(
            f"Dataset {dataset_id} holds {layout or kind} rows; mining needs pairs (anchor, "
            "positive): it adds the negative.",
            param="id",
        )
    check_enough(dataset_id, rows, request)
    embedder = load(request.model)
    with embedder.lock:
        mined, report = mine(rows, embedder.model, request)
    report["model"] = request.model
    report["source"] = dataset_id
    report["reranker_note"] = (
        "Reranker jobs read the same rows as query (anchor), positive and negatives."
    )
    if len(mined) < settings.min_rows:
        raise InvalidRequestError(
            f"{len(mined)} row(s) mined from the {len(rows)} rows of {dataset_id} with these "
            f"settings (range_min, range_max, margin, num_negatives), fewer than the "
            f"{settings.min_rows} rows a training file needs; nothing written. Lower margin "
            "or range_min, or raise range_max (or num_negatives for triplets).",
            param="margin",
            details={"hardness": report["hardness"], "rows": len(rows)},
        )
    stem = Path(require_file(store, dataset_id)["filename"]).stem[:100]
    n_tuples = request.output_format == "n-tuple"
    # n-tuples read as reranker data (its ranking layout), which embedding jobs read too.
    written = write_dataset(
        store, settings,
        f"{stem}-mined-{'n-tuples' if n_tuples else 'triplets'}.jsonl",
        "reranker" if n_tuples else "embedding", mined, {"mining": report},
    )
    return {"dataset": written, "report": report}
