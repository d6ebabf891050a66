"""The quality filter of synthetic answers: length, language, JSON against a schema, and
duplicates (see `datasets.dedup`). Each removed answer has one reason, the first it fails.

Schemas use the JSON Schema keywords `type`, `properties`, `required`, `items`, `enum`,
`minItems`, `maxItems`, `minLength`, `maxLength`, `minimum`, `maximum` and
`additionalProperties: false`; other keywords are refused when the request is made rather
than silently ignored.
"""

from __future__ import annotations

import json
from typing import Any

from tuneforge.datasets.dedup import find_duplicates
from tuneforge.datasets.languages import detect_language
from tuneforge.errors import InvalidRequestError

SUPPORTED = frozenset(
    {
        "type", "properties", "required", "items", "enum", "minItems", "maxItems",
        "minLength", "maxLength", "minimum", "maximum", "additionalProperties",
        "title", "description", "$schema",
    }
)  # fmt: skip
TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def check_schema(schema: Any, where: str = "quality.json_schema") -> None:
    """InvalidRequestError when `schema` uses keywords or types this filter does not know."""
    if not isinstance(schema, dict):
        raise InvalidRequestError(f"{where} must be an object.", param=where)
    unknown = sorted(set(schema) - SUPPORTED)
    if unknown:
        raise InvalidRequestError(
            f"{where} uses keywords this filter does not check: {', '.join(unknown)}.",
            param=where,
        )
    kinds = schema.get("type")
    for kind in kinds if isinstance(kinds, list) else [kinds] if kinds else []:
        if kind not in TYPES:
            raise InvalidRequestError(f"{where}.type {kind!r} is unknown.", param=where)
    for name, inner in (schema.get("properties") or {}).items():
        check_schema(inner, f"{where}.properties.{name}")
    if isinstance(schema.get("items"), dict):
        check_schema(schema["items"], f"{where}.items")


def schema_errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Why `value` does not match `schema` (empty: it does)."""
    kinds = schema.get("type")
    if kinds:
        allowed = kinds if isinstance(kinds, list) else [kinds]
        is_bool = isinstance(value, bool)
        if not any(
            isinstance(value, TYPES[k]) and (k == "boolean" or not is_bool) for k in allowed
        ):
            return [f"{path}: expected {' or '.join(allowed)}"]
    errors: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: not one of {schema['enum']}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{path}: missing {name!r}")
        properties = schema.get("properties") or {}
        for name, inner in properties.items():
            if name in value:
                errors.extend(schema_errors(value[name], inner, f"{path}.{name}"))
        if schema.get("additionalProperties") is False:
            errors.extend(f"{path}: unexpected {k!r}" for k in value if k not in properties)
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: more than {schema['maxItems']} items")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                errors.extend(schema_errors(item, schema["items"], f"{path}[{i}]"))
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: longer than {schema['maxLength']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: above {schema['maximum']}")
    return errors


def answer_problem(answer: str, quality: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, detail) when `answer` fails the per-answer checks, else None."""
    if len(answer) < quality["min_chars"]:
        return "too_short", f"{len(answer)} characters"
    if quality.get("max_chars") is not None and len(answer) > quality["max_chars"]:
        return "too_long", f"{len(answer)} characters"
    if quality.get("languages"):
        language = detect_language(answer)
        if language not in quality["languages"]:
            return "language", language
    if quality.get("json_schema") is not None:
        try:
            value = json.loads(answer)
        except json.JSONDecodeError as error:
            return "invalid_json", error.msg
        errors = schema_errors(value, quality["json_schema"])
        if errors:
            return "schema_mismatch", "; ".join(errors[:3])
    return None


def duplicate_answers(answers: list[str], threshold: float | None) -> dict[int, int]:
    """{index: index of the earlier answer it repeats} among `answers`."""
    return {d.index: d.of for d in find_duplicates(answers, near_threshold=threshold)}
