"""Template strings of graders: `{{ namespace.path }}` replaced by a value, as OpenAI's graders
write them.

Two namespaces exist. `item` is the data line being graded (any JSON object: `{{item.answer}}`,
`{{item.meta.lang}}`, `{{item.choices[0]}}`); `sample` is the model's answer:

| variable              | value                                                          |
|-----------------------|----------------------------------------------------------------|
| `sample.output_text`  | the answer as text                                             |
| `sample.output_json`  | the answer parsed as JSON, when it is JSON (paths go into it)  |
| `sample.output_tools` | the answer's tool calls, as OpenAI's `tool_calls` (a list;     |
|                       | empty for a text answer), see `Sample.of_answer`               |

A string value is put in as it is; any other value (number, object, list, null) as its JSON.

A reference to the item that the item does not have is the data's fault (or the grader's):
`MissingReference` says which reference, where it is used, and what the item has. A
reference into the sample that the answer does not have (no JSON, or JSON without the key)
is the answer's fault: `SampleReferenceError`, which a run reports as an error of that
sample, with reward 0.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from tuneforge.datasets.chat_render import parse_tool_calls
from tuneforge.errors import InvalidRequestError

NAMESPACES = ("item", "sample")
SAMPLE_VARIABLES = ("output_text", "output_json", "output_tools")
PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
# A path: the namespace, then `.key` or `[index]` steps.
STEP = re.compile(r"\.([A-Za-z0-9_\-$]+)|\[(\d+)\]")
HEAD = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Reference:
    """One `{{ … }}` of a template: its text, namespace and steps (keys and list indices)."""

    text: str
    namespace: str
    steps: tuple[str | int, ...]

    def __str__(self) -> str:
        return "{{" + self.text + "}}"


@dataclass
class Sample:
    """The `sample` namespace of one model answer."""

    output_text: str
    output_tools: list[Any] = field(default_factory=list)

    @classmethod
    def of_answer(cls, text: str) -> Sample:
        """The sample of a model's answer: its text, and the tool calls it makes, read back
        from `<tool_call>` blocks or an answer that is one JSON call
        (`datasets.chat_render.parse_tool_calls`); none for a text answer."""
        return cls(text, output_tools=parse_tool_calls(text))

    @property
    def output_json(self) -> Any:
        """The answer parsed as JSON, or `NOT_JSON`."""
        try:
            return json.loads(self.output_text)
        except ValueError:
            return NOT_JSON

    def as_dict(self) -> dict[str, Any]:
        """The namespace as a python grader receives it (output_json None when not JSON)."""
        value = self.output_json
        return {
            "output_text": self.output_text,
            "output_json": None if value is NOT_JSON else value,
            "output_tools": self.output_tools,
        }


NOT_JSON = object()


class TemplateSyntaxError(InvalidRequestError):
    """A placeholder that is no reference (`{{ }}`, `{{foo.bar}}`, `{{sample.nothing}}`)."""


class MissingReference(InvalidRequestError):
    """A reference to the item that the item does not have."""


class SampleReferenceError(Exception):
    """A reference into the sample that this answer does not have. `parse_error`: the answer
    is no JSON at all (rather than JSON without the path)."""

    def __init__(self, message: str, *, parse_error: bool):
        super().__init__(message)
        self.parse_error = parse_error


def references(template: str, param: str) -> list[Reference]:
    """Every reference in `template`; TemplateSyntaxError (naming `param`) for a placeholder
    that is not one."""
    found = []
    for match in PLACEHOLDER.finditer(template):
        found.append(parse_reference(match.group(1), param))
    return found


def parse_reference(text: str, param: str) -> Reference:
    """The reference written `{{text}}` (see the module's docstring)."""
    head = HEAD.match(text)
    rest = text.strip()
    if head is None or head.group(1) not in NAMESPACES:
        raise TemplateSyntaxError(
            f"{{{{{text}}}}} is not a reference: write {{{{item.FIELD}}}} or "
            f"{{{{sample.output_text}}}} (namespaces: item, sample).",
            param=param,
        )
    namespace = head.group(1)
    position = len(head.group(1))
    rest = rest[position:]
    steps: list[str | int] = []
    while rest:
        step = STEP.match(rest)
        if step is None:
            raise TemplateSyntaxError(
                f"{{{{{text}}}}} is not a reference: after {namespace!r} come `.key` and "
                f"`[index]` steps only.",
                param=param,
            )
        steps.append(step.group(1) if step.group(1) is not None else int(step.group(2)))
        rest = rest[step.end() :]
    if not steps:
        raise TemplateSyntaxError(
            f"{{{{{text}}}}} names the whole {namespace}; name a variable ({{{{{namespace}.…}}}}).",
            param=param,
        )
    if namespace == "sample" and steps[0] not in SAMPLE_VARIABLES:
        raise TemplateSyntaxError(
            f"{{{{{text}}}}}: the sample has {', '.join(SAMPLE_VARIABLES)}.", param=param
        )
    if namespace == "sample" and steps[0] == "output_text" and len(steps) > 1:
        raise TemplateSyntaxError(
            f"{{{{{text}}}}}: sample.output_text is text; use sample.output_json.… for keys.",
            param=param,
        )
    return Reference(text.strip(), namespace, tuple(steps))


def resolve(reference: Reference, sample: Sample | None, item: Any, param: str) -> Any:
    """The value `reference` names. MissingReference for the item, SampleReferenceError for
    the sample (see the module's docstring)."""
    if reference.namespace == "item":
        return _walk(item, reference.steps, "item", reference, param)
    if sample is None:
        raise TemplateSyntaxError(f"{reference} needs a sample; there is none here.", param=param)
    variable, *steps = reference.steps
    if variable == "output_text":
        return sample.output_text
    if variable == "output_tools":
        root: Any = sample.output_tools
    else:
        root = sample.output_json
        if root is NOT_JSON:
            raise SampleReferenceError(f"{reference}: the answer is not JSON.", parse_error=True)
    try:
        return _walk(root, tuple(steps), f"sample.{variable}", reference, param)
    except MissingReference as error:
        raise SampleReferenceError(error.message, parse_error=False) from None


def render(template: str, sample: Sample | None, item: Any, param: str) -> str:
    """`template` with each reference replaced by its value (see the module's docstring)."""

    def value_of(match: re.Match[str]) -> str:
        value = resolve(parse_reference(match.group(1), param), sample, item, param)
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return PLACEHOLDER.sub(value_of, template)


def _walk(
    root: Any, steps: tuple[str | int, ...], walked: str, reference: Reference, param: str
) -> Any:
    """The value at `steps` under `root` (called `walked` in messages)."""
    node = root
    for step in steps:
        if isinstance(step, int) and isinstance(node, list):
            if step >= len(node):
                raise MissingReference(
                    f"{reference} (in {param}): {walked} has {len(node)} entries, no [{step}].",
                    param=param,
                )
            node = node[step]
        elif isinstance(step, str) and isinstance(node, dict):
            if step not in node:
                has = ", ".join(sorted(map(str, node))[:20]) or "no fields"
                raise MissingReference(
                    f"{reference} (in {param}): {walked} has no field {step!r} (it has: {has}).",
                    param=param,
                )
            node = node[step]
        else:
            kind = type(node).__name__ if node is not None else "null"
            wanted = f"[{step}]" if isinstance(step, int) else f".{step}"
            raise MissingReference(
                f"{reference} (in {param}): {walked} is {kind} where {wanted} needs "
                f"{'a list' if isinstance(step, int) else 'an object'}.",
                param=param,
            )
        walked = f"{walked}{'[' + str(step) + ']' if isinstance(step, int) else '.' + step}"
    return node
