"""The method of a job that names none: OpenAI's clients send a chat file with no `method`
and mean supervised fine-tuning, so the kind follows the training data (`detect_kind`, as
the upload recorded it in the file's report).

Reinforcement data (prompts whose answer is left to the model, plus the fields a grader
reads; see `datasets.kinds`) needs a grader, which only the method can give: such a file
without a method is refused with a sentence that says so."""

from __future__ import annotations

from pydantic import ValidationError

from tuneforge.datasets.ingest import require_dataset
from tuneforge.db.store import Store
from tuneforge.errors import InvalidRequestError, SpecValidationError
from tuneforge.training.spec import DEFAULT_LOSS, EmbeddingMethod, JobCreate

# Why each kind was chosen, as the job's event says it.
DATA_SHAPES = {
    "supervised": "chat messages or prompt/completion",
    "dpo": "preference pairs",
    "classification": "texts with labels",
    "embedding": "pairs, triplets or scored pairs",
    "reranker": "queries with labeled documents, or with positives and negatives",
}


def settle_method(store: Store, request: JobCreate) -> tuple[JobCreate, str | None]:
    """`request` with its method chosen from its first training file when it names none, and
    OpenAI's top-level hyperparameters moved into it; with the event that says what was
    chosen and why (None when the request named its method). SpecValidationError (422, naming
    the field) when the result is no valid job; InvalidRequestError when a hyperparameter is
    given twice, or the data's kind cannot be trained without a method (reinforcement)."""
    kind = None
    note = None
    if "method" not in request.model_fields_set:
        file_id = request.all_training_files()[0]
        param = "training_file" if request.training_file else "training_files[0]"
        kind = require_dataset(store, file_id, param)["report"].get("kind")
        if kind is not None and kind not in DATA_SHAPES:
            raise InvalidRequestError(
                f"File {file_id} holds {kind} data, which needs more than the data to train "
                f"on: name the method (method.type {kind!r} and its settings).",
                param="method",
            )
        if kind is not None:
            note = (
                f"No method given: file {file_id} holds {DATA_SHAPES.get(kind, kind)}, so this "
                f"is a {kind} job."
            )
    try:
        return request.with_method(kind), note
    except ValidationError as exc:
        errors = [{"param": _field(e["loc"]), "message": e["msg"]} for e in exc.errors()]
        raise SpecValidationError(
            "; ".join(f"{e['param']}: {e['message']}" for e in errors),
            param=errors[0]["param"] if errors else None,
            details=errors,
        ) from None
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="hyperparameters") from exc


def _field(loc: tuple[int | str, ...]) -> str:
    """pydantic's location as the request's field path: `method` is a union told apart by
    `type`, and pydantic puts the tag into the path (method.dpo.dpo.beta)."""
    parts = [str(part) for part in loc]
    if len(parts) > 1 and parts[0] == "method":
        del parts[1]
    return ".".join(parts) or "body"


def settle_loss(request: JobCreate, layout: str) -> tuple[JobCreate, str | None]:
    """An embedding job that names no loss gets the loss of its data's layout (CoSENT for
    scored pairs, MNRL for pairs and triplets), recorded in its spec; with the event that
    says so (None when the request named its loss, or is no embedding job)."""
    method = request.method
    if not isinstance(method, EmbeddingMethod) or method.embedding.loss is not None:
        return request, None
    loss = DEFAULT_LOSS[layout]
    params = method.embedding.model_copy(update={"loss": loss})
    settled = request.model_copy(update={"method": method.model_copy(update={"embedding": params})})
    shape = layout.replace("_", " ")
    return settled, f"No loss given: the data holds {shape}s, so the job trains with {loss}."


def check_matryoshka(request: JobCreate, model_location: str) -> None:
    """`matryoshka_dims` above the model's embedding dimension: 422 naming the field."""
    method = request.method
    if not isinstance(method, EmbeddingMethod) or not method.embedding.matryoshka_dims:
        return
    from tuneforge.training.embedding import embedding_dimension

    dims = method.embedding.matryoshka_dims
    size = embedding_dimension(model_location)
    if size is not None and dims[0] > size:
        param = "method.embedding.matryoshka_dims"
        raise SpecValidationError(
            f"{param}: {dims[0]} is above the model's embedding dimension ({size}); give "
            f"sizes up to {size}, strictly decreasing.",
            param=param,
            details=[{"param": param, "message": f"{dims[0]} > {size}"}],
        )
