"""`tuneforge datasets`: a file's validation report and statistics, and preparing a file
(cleaning, de-duplicating, filtering, splitting) into new datasets."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from tuneforge.cli.client import ApiClient
from tuneforge.cli.console import console, table
from tuneforge.cli.options import DEFAULT_URL, Url, split_list

app = typer.Typer(help="Validation reports and statistics of files.", no_args_is_help=True)


@app.command("show")
def show_dataset(dataset_id: str, url: Url = DEFAULT_URL) -> None:
    """The validation report (every problem, counts per code) and statistics of a file."""
    report = ApiClient(url).get(f"/v1/datasets/{dataset_id}")
    verdict = (
        "[green]valid[/]"
        if report["valid"]
        else (f"[red]invalid[/], {report['problem_count']} problem(s)")
    )
    console.print(
        f"[bold]{report['id']}[/] ({escape(report['file']['filename'])}): "
        f"{report['format']}, layout {report['layout'] or '-'}, "
        f"columns {', '.join(report['columns']) or '-'}; {verdict}",
        soft_wrap=True,
    )
    if report["problems"]:
        shown = len(report["problems"])
        title = "Problems" + (
            f" (first {shown} of {report['problem_count']})"
            if report["problem_count"] > shown
            else ""
        )
        problems = table("line", "column", "code", "message", title=title)
        for p in report["problems"]:
            problems.add_row(
                str(p["line"] or ""), escape(p["column"] or ""), p["code"], escape(p["message"])
            )
        console.print(problems)
        counts = table("code", "count", title="Problems by code")
        for code, n in report["problems_by_code"].items():
            counts.add_row(code, str(n))
        console.print(counts)
    stats = report["statistics"]
    extra = f", score scale 0-{stats['score_scale']:g}" if "score_scale" in stats else ""
    console.print(f"Rows: {stats['rows']}, exact duplicates: {stats['exact_duplicates']}{extra}")
    if stats["columns"]:
        lengths = table("column", "unit", "min", "median", "p95", "max", title="Lengths")
        for column, units in stats["columns"].items():
            for unit in ("chars", "tokens"):
                s = units.get(unit)
                if s:
                    lengths.add_row(
                        column,
                        unit,
                        str(s["min"]),
                        f"{s['median']:g}",
                        f"{s['p95']:g}",
                        str(s["max"]),
                    )
        console.print(lengths)


@app.command("prepare")
def prepare_dataset_command(
    dataset_id: str,
    merge: Annotated[list[str] | None, typer.Option(help="Another dataset to merge in.")] = None,
    languages: Annotated[str | None, typer.Option(help="Keep these languages: de,en.")] = None,
    min_chars: Annotated[int, typer.Option(help="Remove rows with fewer characters.")] = 0,
    max_chars: Annotated[int | None, typer.Option(help="Remove rows with more.")] = None,
    near_duplicates: Annotated[
        float, typer.Option(help="Near-duplicate Jaccard threshold (0: exact ones only).")
    ] = 0.8,
    validation_share: Annotated[float, typer.Option(help="Share held out (0: none).")] = 0.1,
    seed: int = 0,
    url: Url = DEFAULT_URL,
) -> None:
    """Clean, de-duplicate, filter and split a dataset into new train/validation datasets."""
    body = {
        "merge": merge or [],
        "languages": split_list(languages),
        "min_chars": min_chars,
        "max_chars": max_chars,
        "near_duplicate_threshold": near_duplicates or None,
        "validation_share": validation_share,
        "seed": seed,
    }
    done = ApiClient(url).post(f"/v1/datasets/{dataset_id}/prepare", json=body)
    report = done["report"]
    console.print(
        f"{report['rows_in']} rows in, {report['rows_out']} kept; train [bold]"
        f"{done['train']['id']}[/] ({report['split']['train_rows']} rows)"
        + (
            f", validation [bold]{done['validation']['id']}[/] "
            f"({report['split']['validation_rows']} rows)"
            if done["validation"]
            else ""
        ),
        soft_wrap=True,
    )
    removed = table("reason", "rows", "example", title="Removed")
    for reason, n in report["removed"].items():
        example = report["examples"][reason][0]
        removed.add_row(reason, str(n), escape(f"row {example['row']}: {example['text'][:80]}"))
    if report["removed"]:
        console.print(removed)
    languages_seen = ", ".join(f"{k} {v}" for k, v in report["statistics"]["languages"].items())
    console.print(f"Languages: {languages_seen}", soft_wrap=True)


@app.command("mine")
def mine_negatives_command(
    dataset_id: str,
    model: Annotated[
        str, typer.Option(help="Embedding model that judges similarity (usually the base).")
    ],
    num_negatives: Annotated[int, typer.Option(help="Negatives per row.")] = 1,
    range_min: Annotated[int, typer.Option(help="Skip this many most similar.")] = 0,
    range_max: Annotated[int, typer.Option(help="Take negatives up to this rank.")] = 100,
    margin: Annotated[float, typer.Option(help="Below the positive's similarity by.")] = 0.0,
    sampling: Annotated[str, typer.Option(help="top or random.")] = "top",
    output_format: Annotated[
        str, typer.Option(help="triplet (a row per negative) or n-tuple (a row per pair).")
    ] = "triplet",
    seed: int = 0,
    url: Url = DEFAULT_URL,
) -> None:
    """Hard-negative mining: a pair dataset becomes a new triplet or n-tuple dataset."""
    body = {
        "model": model,
        "num_negatives": num_negatives,
        "range_min": range_min,
        "range_max": range_max,
        "margin": margin,
        "sampling": sampling,
        "output_format": output_format,
        "seed": seed,
    }
    done = ApiClient(url).post(f"/v1/datasets/{dataset_id}/mine_negatives", json=body)
    report, hard = done["report"], done["report"]["hardness"]
    console.print(
        f"{report['rows_in']} pairs in; {report['negatives']} negatives for "
        f"{report['rows_with_negatives']} rows ({report['rows_without_negatives']} without "
        f"one); {report['output_format']}s [bold]{done['dataset']['id']}[/] "
        f"({report['rows_out']} rows)",
        soft_wrap=True,
    )
    console.print(
        f"Similarity to the anchor: positives {hard['mean_positive_similarity']}, negatives "
        f"{hard['mean_negative_similarity']} (gap {hard['mean_gap']}); negatives' rank: mean "
        f"{hard['mean_rank']}, median {hard['median_rank']}",
        soft_wrap=True,
    )
    ranks = table("rank", "negatives", title="Negatives by rank")
    for bucket, n in hard["rank_distribution"].items():
        ranks.add_row(bucket, str(n))
    console.print(ranks)
