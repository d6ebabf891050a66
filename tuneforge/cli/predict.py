"""`tuneforge predict`: labels from a trained classification model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneforge.cli.client import ApiClient
from tuneforge.cli.console import console, fail, table
from tuneforge.cli.options import DEFAULT_URL, Url


def predict(
    model: Annotated[str, typer.Argument(help="A text-classification model, e.g. ft:...")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to label.")] = None,
    file: Annotated[
        str | None,
        typer.Option("--file", "-f", help="Texts to label, one a line ('-': standard input)."),
    ] = None,
    top_k: Annotated[
        int | None, typer.Option(min=1, help="Also show this many best classes with scores.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the responses as JSON.")] = False,
    url: Url = DEFAULT_URL,
) -> None:
    """Label texts with a trained classification model (POST /v1/classifications)."""
    from tuneforge.serving.classifier import MAX_INPUTS

    inputs = list(texts or [])
    if file is not None:
        try:
            lines = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"Cannot read {file}: {exc}")
        inputs += [line for line in lines.splitlines() if line.strip()]
    if not inputs:
        fail("Give the texts to label as arguments or with --file.")
    api = ApiClient(url)
    responses = [
        api.post(
            "/v1/classifications",
            json={"model": model, "input": inputs[start : start + MAX_INPUTS], "top_k": top_k},
        )
        for start in range(0, len(inputs), MAX_INPUTS)
    ]
    if as_json:
        for response in responses:
            console.print_json(data=response)
        return
    columns = ["text", "labels", "score"] + (["best classes"] if top_k else [])
    labels = table(*columns)
    results = [item for response in responses for item in response["data"]]
    for text, item in zip(inputs, results, strict=True):
        scores = {s["label"]: s["score"] for s in item["scores"]}
        shown = [
            escape(text),
            escape(", ".join(item["labels"]) or "-"),
            ", ".join(f"{scores[name]:.3f}" for name in item["labels"] if name in scores),
        ]
        if top_k:
            shown.append(
                escape(", ".join(f"{s['label']} {s['score']:.3f}" for s in item["scores"]))
            )
        labels.add_row(*shown)
    console.print(labels)
