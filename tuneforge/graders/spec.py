"""Grader specs: OpenAI's grader objects, field for field, and tuneforge's own
`tuneforge_checks`; `parse_grader` reads one and reports every problem with the field it
is in (`grader.graders.a.reference`).

| type               | fields (besides `type` and `name`)                                   |
|--------------------|----------------------------------------------------------------------|
| `string_check`     | `input`, `reference` (templates), `operation`: eq, ne, like, ilike   |
| `text_similarity`  | `input`, `reference`, `evaluation_metric` (see `similarity`, cosine) |
| `score_model`      | `model`, `input` (messages), `range` ([0, 1]), `sampling_params`     |
| `label_model`      | `model`, `input`, `labels`, `passing_labels`                         |
| `python`           | `source` defining `grade(sample, item)`, `image_tag` (ignored)       |
| `multi`            | `graders` (key -> any grader but multi), `calculate_output` formula  |
| `tuneforge_checks` | `input`, `json_valid`, `expected_keys`, `reference`, `language`,    |
|                    | `min_chars`, `max_chars` (see `checks`)                              |
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from tuneforge.errors import InvalidRequestError
from tuneforge.graders import formula
from tuneforge.graders.templates import references

MAX_SOURCE_BYTES = 256 * 1024  # as OpenAI's python graders
KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Name = Annotated[str, Field(min_length=1, max_length=256, description="The grader's name.")]
ModelName = Annotated[
    str, Field(min_length=1, max_length=255, description="A model tuneforge serves.")
]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StringCheckGrader(_Spec):
    """1 when the rendered `input` and `reference` pass `operation`, else 0: `eq` equal,
    `ne` different, `like` the input contains the reference, `ilike` so ignoring case."""

    type: Literal["string_check"]
    name: Name
    input: str = Field(..., description="The text to check; a template.")
    reference: str = Field(..., description="The text to check against; a template.")
    operation: Literal["eq", "ne", "like", "ilike"]


class TextSimilarityGrader(_Spec):
    """The similarity of the rendered `input` to `reference`, from 0 to 1."""

    type: Literal["text_similarity"]
    name: Name
    input: str = Field(..., description="The text graded; a template.")
    reference: str = Field(..., description="The text graded against; a template.")
    evaluation_metric: Literal[
        "cosine",
        "fuzzy_match",
        "bleu",
        "gleu",
        "meteor",
        "rouge_1",
        "rouge_2",
        "rouge_3",
        "rouge_4",
        "rouge_5",
        "rouge_l",
    ]


class JudgeMessage(_Spec):
    """A message of a model grader's prompt: `content` is a text (a template), a text part
    (`input_text` or `output_text`), or a list of them."""

    role: Literal["user", "assistant", "system", "developer"]
    content: Any = Field(..., description="Text, a text part or a list of text parts.")
    type: Literal["message"] | None = None

    @field_validator("content")
    @classmethod
    def _text_content(cls, value: Any) -> Any:
        for part in value if isinstance(value, list) else [value]:
            if isinstance(part, str):
                continue
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in ("input_image", "input_audio"):
                raise ValueError(
                    f"{kind} is not supported: the judge models tuneforge serves read text."
                )
            if kind not in ("input_text", "output_text") or not isinstance(part.get("text"), str):
                raise ValueError(
                    "content is a text, a {type: input_text or output_text, text} part, or "
                    "a list of them."
                )
        return value

    def templates(self) -> Iterator[tuple[str, str]]:
        """(field path below the message, template) of each text in the content."""
        if isinstance(self.content, str):
            yield "content", self.content
        elif isinstance(self.content, dict):
            yield "content.text", self.content["text"]
        else:
            for i, part in enumerate(self.content):
                if isinstance(part, str):
                    yield f"content[{i}]", part
                else:
                    yield f"content[{i}].text", part["text"]


class SamplingParams(_Spec):
    max_completions_tokens: int | None = Field(
        None, ge=1, le=4096, description="Most tokens the judge writes (default 256)."
    )
    reasoning_effort: str | None = Field(None, description="Accepted and ignored.")
    seed: int | None = None
    temperature: float | None = Field(None, ge=0, le=2, description="Default 0: greedy.")
    top_p: float | None = Field(None, gt=0, le=1)


class ScoreModelGrader(_Spec):
    """A served model reads the rendered `input` and answers a score within `range`."""

    type: Literal["score_model"]
    name: Name
    model: ModelName
    input: list[JudgeMessage] = Field(..., min_length=1)
    range: list[float] | None = Field(
        None, min_length=2, max_length=2, description="[lowest, highest]; default [0, 1]."
    )
    sampling_params: SamplingParams | None = None

    @field_validator("range")
    @classmethod
    def _ordered(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError("range is [lowest, highest], lowest below highest.")
        return value

    def bounds(self) -> tuple[float, float]:
        low, high = self.range or (0.0, 1.0)
        return low, high


class LabelModelGrader(_Spec):
    """A served model reads the rendered `input` and answers one of `labels`: 1 when it is
    one of `passing_labels`, else 0."""

    type: Literal["label_model"]
    name: Name
    model: ModelName
    input: list[JudgeMessage] = Field(..., min_length=1)
    labels: list[Annotated[str, Field(min_length=1)]] = Field(..., min_length=1)
    passing_labels: list[str] = Field(..., min_length=1)
    # Not OpenAI's: the judge's sampling, as score_model has it.
    sampling_params: SamplingParams | None = None


class PythonGrader(_Spec):
    """`source` defines `grade(sample, item)`, run apart (see `sandbox`)."""

    type: Literal["python"]
    name: Name
    source: str = Field(..., description="Python source defining grade(sample, item).")
    image_tag: str | None = Field(None, description="Accepted and ignored: one image here.")


class ChecksGrader(_Spec):
    """tuneforge's generation checks as a reward (see `checks`)."""

    type: Literal["tuneforge_checks"]
    name: Name
    input: str = Field("{{sample.output_text}}", description="The answer; a template.")
    json_valid: bool = Field(True, description="The answer must be a JSON object or array.")
    expected_keys: list[str] | str | None = Field(
        None, description="Keys the JSON answer must have, or a template naming such a list."
    )
    reference: str | None = Field(
        None,
        description="The reference answer (a template): when it is a JSON object and "
        "expected_keys is not given, its keys are the expected keys.",
    )
    language: str | None = Field(
        None,
        description="ISO 639-1 code the answer must be written in (a template), or `prompt`: "
        "the language of the item's last user message.",
    )
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=1)

    def checks_something(self) -> bool:
        optional = (
            self.expected_keys,
            self.reference,
            self.language,
            self.min_chars,
            self.max_chars,
        )
        return self.json_valid or any(value is not None for value in optional)


LeafGrader = Annotated[
    StringCheckGrader
    | TextSimilarityGrader
    | ScoreModelGrader
    | LabelModelGrader
    | PythonGrader
    | ChecksGrader,
    Field(discriminator="type"),
]


class MultiGrader(_Spec):
    """Sub-graders by key, combined by the `calculate_output` formula (see `formula`)."""

    type: Literal["multi"]
    name: Name
    graders: dict[str, LeafGrader] = Field(
        ..., min_length=1, description="Sub-graders by the keys the formula names them by."
    )
    calculate_output: str = Field(..., min_length=1)

    @field_validator("graders", mode="before")
    @classmethod
    def _one_grader(cls, value: Any) -> Any:
        # The openai client's types declare `graders` as one grader object (OpenAI's docs
        # and examples send a mapping): one grader is taken as the mapping {its name: it}.
        if isinstance(value, dict) and isinstance(value.get("type"), str):
            return {str(value.get("name")): value}
        return value


Grader = Annotated[
    StringCheckGrader
    | TextSimilarityGrader
    | ScoreModelGrader
    | LabelModelGrader
    | PythonGrader
    | ChecksGrader
    | MultiGrader,
    Field(discriminator="type"),
]
GRADER_TYPES = (
    "string_check",
    "text_similarity",
    "score_model",
    "label_model",
    "python",
    "tuneforge_checks",
    "multi",
)
ModelGrader = ScoreModelGrader | LabelModelGrader
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Grader)


def parse_grader(data: Any, param: str = "grader") -> Any:
    """The grader `data` describes; InvalidRequestError listing every problem (`details`:
    param and message each), the first one's field as its `param`."""
    try:
        grader = _ADAPTER.validate_python(data)
    except ValidationError as error:
        problems = [
            {"param": _param(param, e["loc"], e["type"]), "message": e["msg"]}
            for e in error.errors()
        ]
    else:
        problems = list(_problems(grader, param))
        if not problems:
            return grader
    message = "; ".join(f"{p['param']}: {p['message']}" for p in problems)
    raise InvalidRequestError(message, param=problems[0]["param"], details=problems)


def leaves(grader: Any, param: str = "grader") -> Iterator[tuple[str, Any]]:
    """(field path, grader) of the graders that grade: the grader itself, or a multi's."""
    if isinstance(grader, MultiGrader):
        for key, sub in grader.graders.items():
            yield f"{param}.graders.{key}", sub
    else:
        yield param, grader


def templates(grader: Any, param: str = "grader") -> Iterator[tuple[str, str]]:
    """(field path, template) of every template of the grader and its sub-graders."""
    for path, leaf in leaves(grader, param):
        if isinstance(leaf, ScoreModelGrader | LabelModelGrader):
            for i, message in enumerate(leaf.input):
                for where, text in message.templates():
                    yield f"{path}.input[{i}].{where}", text
            continue
        for field in ("input", "reference", "language", "expected_keys"):
            value = getattr(leaf, field, None)
            if isinstance(value, str):
                yield f"{path}.{field}", value


def _param(root: str, loc: tuple[Any, ...], kind: str) -> str:
    """pydantic's location as a field path under `root`, without the union tags it adds
    (`multi`, `graders`, `a`, `string_check`, `reference` -> `graders.a.reference`)."""
    parts = list(loc)
    if parts and parts[0] in GRADER_TYPES:
        parts = parts[1:]
    if len(parts) >= 3 and parts[0] == "graders" and parts[2] in GRADER_TYPES:
        del parts[2]
    path = root
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        path += ".type"
    return path


def _problems(grader: Any, param: str) -> Iterator[dict[str, str]]:
    """What validating field by field cannot see: templates, formulas, labels, source."""
    for path, text in templates(grader, param):
        try:
            references(text, path)
        except InvalidRequestError as error:
            yield {"param": path, "message": error.message}
    if isinstance(grader, MultiGrader):
        for key in grader.graders:
            if not KEY.match(key):
                yield {
                    "param": f"{param}.graders.{key}",
                    "message": "A key a formula can name: letters, digits and _, not first "
                    "a digit.",
                }
        try:
            formula.parse(grader.calculate_output, grader.graders)
        except formula.FormulaError as error:
            yield {"param": f"{param}.calculate_output", "message": str(error)}
    for path, leaf in leaves(grader, param):
        if isinstance(leaf, LabelModelGrader):
            strangers = [label for label in leaf.passing_labels if label not in leaf.labels]
            if strangers:
                yield {
                    "param": f"{path}.passing_labels",
                    "message": f"{strangers} are not among labels {leaf.labels}.",
                }
        elif isinstance(leaf, PythonGrader):
            problem = _source_problem(leaf.source)
            if problem:
                yield {"param": f"{path}.source", "message": problem}
        elif isinstance(leaf, ChecksGrader) and not leaf.checks_something():
            yield {"param": path, "message": "The grader checks nothing: turn a check on."}


def _source_problem(source: str) -> str | None:
    """Why `source` cannot be a python grader, or None. Only parsed here, never run."""
    if len(source.encode()) > MAX_SOURCE_BYTES:
        return f"The source is larger than {MAX_SOURCE_BYTES // 1024} KiB."
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        return f"The source does not parse: {error}"
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "grade":
            positional = node.args.posonlyargs + node.args.args
            if len(positional) >= 2 or node.args.vararg is not None:
                return None
            return "grade() must take two arguments: grade(sample, item)."
    return "The source must define grade(sample, item) at its top level."
