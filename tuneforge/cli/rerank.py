"""`tuneforge rerank`: documents ordered by a reranker's relevance to a query."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneforge.cli.client import ApiClient
from tuneforge.cli.console import console, fail, table
from tuneforge.cli.options import DEFAULT_URL, Url


def rerank(
    model: Annotated[str, typer.Argument(help="A reranker, e.g. ft:... or NAME@production.")],
    query: Annotated[str, typer.Argument(help="What the documents are ranked for.")],
    documents: Annotated[list[str] | None, typer.Argument(help="Documents to rank.")] = None,
    file: Annotated[
        str | None,
        typer.Option("--file", "-f", help="Documents, one a line ('-': standard input)."),
    ] = None,
    top_n: Annotated[int | None, typer.Option(min=1, help="Show this many best.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the response as JSON.")] = False,
    url: Url = DEFAULT_URL,
) -> None:
    """Rank documents by their relevance to a query with a reranker (POST /v1/rerank)."""
    texts = list(documents or [])
    if file is not None:
        try:
            lines = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"Cannot read {file}: {exc}")
        texts += [line for line in lines.splitlines() if line.strip()]
    if not texts:
        fail("Give the documents as arguments or with --file.")
    body = {"model": model, "query": query, "documents": texts, "top_n": top_n}
    response = ApiClient(url).post("/v1/rerank", json=body)
    if as_json:
        console.print_json(data=response)
        return
    ranked = table("rank", "score", "index", "document")
    for rank, result in enumerate(response["results"], start=1):
        text = texts[result["index"]]
        ranked.add_row(
            str(rank), f"{result['relevance_score']:.4f}", str(result["index"]), escape(text)
        )
    console.print(ranked)
