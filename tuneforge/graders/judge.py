"""Model graders (score_model, label_model): the prompt a served model judges from, and the
score or label read back from what it writes.

The prompt is the grader's `input` messages, rendered, with one instruction added: answer
with a JSON object `{"result": …}` (a number within the range, or one of the labels). OpenAI
constrains its judges to such an object; a model served here is only asked, so its answer
is read leniently:

| grader        | read, in this order                                                    |
|---------------|------------------------------------------------------------------------|
| `score_model` | `result` (or `score`) of the first JSON object in the answer; the      |
|               | answer as one number; the last number in the answer. It must lie       |
|               | within `range`, else the answer is a parse error (reward 0)            |
| `label_model` | `result` (or `label`) of the first JSON object; the answer as one       |
|               | label (case, quotes and a final full stop aside); the one label named   |
|               | in the answer as a word. Anything else is a parse error                 |
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from tuneforge.graders.spec import JudgeMessage, LabelModelGrader, ScoreModelGrader
from tuneforge.graders.templates import Sample, render

NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
JSON_OBJECT = re.compile(r"\{[^{}]*\}")
DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True)
class JudgeSampling:
    """How the judge writes: greedy unless the grader's sampling_params say otherwise."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Verdict:
    """What was read from a judge's answer: the value (a score or a label) or None when
    nothing could be read, and why."""

    value: float | str | None
    problem: str | None = None


def prompt_messages(
    grader: ScoreModelGrader | LabelModelGrader, sample: Sample, item: Any, param: str
) -> list[dict[str, str]]:
    """The judge's conversation: the grader's messages rendered (their text parts joined),
    the answer format asked for in a system message of its own first (or added to the first
    system or developer message)."""
    messages = [
        {
            "role": "system" if message.role == "developer" else message.role,
            "content": _text(message, sample, item, f"{param}.input[{i}]"),
        }
        for i, message in enumerate(grader.input)
    ]
    instruction = format_instruction(grader)
    if messages[0]["role"] == "system":
        messages[0]["content"] = f"{messages[0]['content']}\n\n{instruction}"
    else:
        messages.insert(0, {"role": "system", "content": instruction})
    return messages


def format_instruction(grader: ScoreModelGrader | LabelModelGrader) -> str:
    if isinstance(grader, ScoreModelGrader):
        low, high = grader.bounds()
        return (
            f'Answer with a JSON object {{"result": SCORE}} only, SCORE being a number from '
            f"{_number(low)} to {_number(high)}."
        )
    labels = ", ".join(json.dumps(label, ensure_ascii=False) for label in grader.labels)
    return f'Answer with a JSON object {{"result": LABEL}} only, LABEL being one of: {labels}.'


def sampling(grader: ScoreModelGrader | LabelModelGrader) -> JudgeSampling:
    params = grader.sampling_params
    if params is None:
        return JudgeSampling()
    return JudgeSampling(
        max_tokens=params.max_completions_tokens or DEFAULT_MAX_TOKENS,
        temperature=0.0 if params.temperature is None else params.temperature,
        top_p=params.top_p,
        seed=params.seed,
    )


def read_score(answer: str, low: float, high: float) -> Verdict:
    """The score in a judge's answer (see the module's docstring)."""
    found = _json_result(answer, ("result", "score"))
    value: float | None = None
    numeric = isinstance(found, int | float) and not isinstance(found, bool)
    if numeric or (isinstance(found, str) and NUMBER.fullmatch(found.strip())):
        value = float(found)
    else:
        numbers = NUMBER.findall(answer)
        if numbers:
            value = float(numbers[-1])
    if value is None or not math.isfinite(value):
        return Verdict(None, f"No score in the judge's answer: {answer[:200]!r}")
    if not low <= value <= high:
        return Verdict(None, f"The judge's score {value:g} is outside [{low:g}, {high:g}].")
    return Verdict(value)


def read_label(answer: str, labels: list[str]) -> Verdict:
    """The label in a judge's answer (see the module's docstring)."""
    by_key = {_key(label): label for label in labels}
    found = _json_result(answer, ("result", "label"))
    if isinstance(found, str) and _key(found) in by_key:
        return Verdict(by_key[_key(found)])
    if _key(answer) in by_key:
        return Verdict(by_key[_key(answer)])
    named = [
        label
        for label in labels
        if re.search(rf"(?<!\w){re.escape(label.lower())}(?!\w)", answer.lower())
    ]
    if len(named) == 1:
        return Verdict(named[0])
    why = "several labels" if named else "none of the labels"
    return Verdict(None, f"The judge's answer names {why}: {answer[:200]!r}")


def _text(message: JudgeMessage, sample: Sample, item: Any, param: str) -> str:
    return "\n".join(
        render(text, sample, item, f"{param}.{where}") for where, text in message.templates()
    )


def _json_result(answer: str, keys: tuple[str, ...]) -> Any:
    """The first of `keys` in the first JSON object of `answer` that has one, or None."""
    for match in JSON_OBJECT.finditer(answer):
        try:
            value = json.loads(match.group(0))
        except ValueError:
            continue
        for key in keys:
            if isinstance(value, dict) and key in value:
                return value[key]
    return None


def _key(text: str) -> str:
    return text.strip().strip("\"'`").rstrip(".").strip().lower()


def _number(value: float) -> str:
    return f"{value:g}"
