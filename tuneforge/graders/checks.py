"""`tuneforge_checks`: the generation checks of seed 001 (`training.generation_checks`) as a
reward, so that a job's goals (valid JSON, the expected keys, the right language, a length)
can be what reinforcement fine-tuning optimises.

| check           | counts when                                  | passes when                  |
|-----------------|----------------------------------------------|------------------------------|
| `json_valid`    | `json_valid` is true                         | the answer is a JSON object  |
|                 |                                              | or array (a ```json fence    |
|                 |                                              | around it allowed)           |
| `expected_keys` | keys are known: `expected_keys`, or the keys | the answer is an object with |
|                 | of `reference` when that is a JSON object    | all of them                  |
| `language`      | `language` is given and the detector is sure | it is the answer's language  |
|                 | of both languages (`prompt`: the item's last |                              |
|                 | user message's)                              |                              |
| `length`        | `min_chars` or `max_chars` is given          | the answer's length is within|

The reward is the share of the checks that count which pass; 0 when none counts.
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.graders.spec import ChecksGrader
from tuneforge.graders.templates import MissingReference, Sample, render, resolve
from tuneforge.graders.templates import references as template_references
from tuneforge.training.generation_checks import answer_prose, detect_language, parse_json


def check(grader: ChecksGrader, sample: Sample, item: Any, param: str) -> dict[str, Any]:
    """Each check's verdict (1.0, 0.0, or None where it does not count)."""
    answer = render(grader.input, sample, item, f"{param}.input")
    value = parse_json(answer)
    verdicts: dict[str, Any] = {
        "json_valid": (1.0 if value is not None else 0.0) if grader.json_valid else None
    }
    keys = _expected_keys(grader, sample, item, param)
    verdicts["expected_keys"] = (
        None if keys is None else float(isinstance(value, dict) and set(keys) <= set(value))
    )
    verdicts["language"] = _language(grader, answer, value, sample, item, param)
    verdicts["length"] = None
    if grader.min_chars is not None or grader.max_chars is not None:
        low, high = grader.min_chars or 0, grader.max_chars or len(answer)
        verdicts["length"] = float(low <= len(answer) <= high)
    return verdicts


def reward(verdicts: dict[str, Any]) -> float:
    counted = [v for v in verdicts.values() if v is not None]
    return sum(counted) / len(counted) if counted else 0.0


def _expected_keys(grader: ChecksGrader, sample: Sample, item: Any, param: str) -> Any:
    wanted = grader.expected_keys
    if isinstance(wanted, str):
        found = template_references(wanted, f"{param}.expected_keys")
        if len(found) == 1 and wanted.strip() == str(found[0]):
            wanted = resolve(found[0], sample, item, f"{param}.expected_keys")
        else:
            text = render(wanted, sample, item, f"{param}.expected_keys")
            try:
                wanted = json.loads(text)
            except ValueError:
                wanted = text
        if not (isinstance(wanted, list) and all(isinstance(k, str) for k in wanted)):
            raise MissingReference(
                f"{param}.expected_keys must name a list of keys; it is {wanted!r}.",
                param=f"{param}.expected_keys",
            )
        return wanted
    if wanted is not None:
        return wanted
    if grader.reference is None:
        return None
    reference = parse_json(render(grader.reference, sample, item, f"{param}.reference"))
    return list(reference) if isinstance(reference, dict) else None


def _language(
    grader: ChecksGrader, answer: str, value: Any, sample: Sample, item: Any, param: str
) -> float | None:
    if grader.language is None:
        return None
    if grader.language == "prompt":
        messages = item.get("messages") if isinstance(item, dict) else None
        users = [
            m.get("content")
            for m in messages or []
            if isinstance(m, dict) and m.get("role") == "user"
        ]
        if not users or not isinstance(users[-1], str):
            raise MissingReference(
                f"{param}.language is `prompt`, but the item has no user message in `messages`.",
                param=f"{param}.language",
            )
        wanted = detect_language(users[-1])
    else:
        wanted = render(grader.language, sample, item, f"{param}.language").strip().lower()
    found = detect_language(answer_prose(answer, value))
    if wanted is None or found is None:
        return None
    return float(found == wanted)
