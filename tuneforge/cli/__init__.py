"""The `tuneforge` command line (typer + rich).

`serve` and `worker` run the service; `files`, `datasets`, `jobs` and `models` talk to it over
HTTP (`--url`, or `TUNEFORGE_URL`); `train` runs a job spec locally, without a server.
Torch, httpx and the service's modules are imported inside the commands that need them, so
that `tuneforge --help` starts at once.

One module per command group; this one assembles them into `app`, in the order `--help`
lists them. `client` is the one HTTP client, `console` what every command prints.
"""

from __future__ import annotations

import typer

from tuneforge.cli import (
    datasets,
    deployments,
    doctor,
    exports,
    feedback,
    files,
    graders,
    jobs,
    keys,
    models,
    predict,
    rerank,
    service,
    studies,
    synthetic,
    train,
)
from tuneforge.cli.help import HelpGroup

# Help is click's plain formatting: it wraps each docstring paragraph to the terminal as one
# text (typer's rich formatting keeps the docstrings' line breaks, mid-sentence, and loads
# rich's Markdown parser into every `--help`). Every group below inherits it.
app = typer.Typer(
    help="tuneforge: self-hosted fine-tuning.",
    no_args_is_help=True,
    rich_markup_mode=None,
    cls=HelpGroup,
)

app.command("serve")(service.serve)
app.command("worker")(service.run_worker)
app.command("predict")(predict.predict)
app.command("rerank")(rerank.rerank)
app.command("train")(train.train)
app.command("export")(exports.export_model)
app.command("doctor")(doctor.doctor)

app.add_typer(files.app, name="files")
app.add_typer(datasets.app, name="datasets")
app.add_typer(jobs.app, name="jobs")
app.add_typer(models.app, name="models")
app.add_typer(keys.app, name="keys")
app.add_typer(studies.app, name="studies")
app.add_typer(feedback.app, name="feedback")
app.add_typer(synthetic.app, name="synthetic")
app.add_typer(graders.app, name="graders")
app.add_typer(deployments.app, name="deployments")

# Every group lists its commands with their whole first sentence (tuneforge.cli.help).
for _group in app.registered_groups:
    _group.cls = HelpGroup
