"""The base of every answer schema."""

from __future__ import annotations

from typing import Any

from pydantic import MISSING, BaseModel, ConfigDict


def _every_field_present(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    # pydantic marks a field with a default as optional, but an answer always carries it
    # (`object`, nulls): only a field that may be MISSING can be absent.
    schema["required"] = [
        name for name, field in cls.model_fields.items() if field.default is not MISSING
    ]


class Public(BaseModel):
    """An answer of the API. Each field is in every answer, null when it has no value, except
    a field that defaults to `MISSING`: that one is left out of the answer while unset (as for
    a key that a stored report may lack)."""

    model_config = ConfigDict(json_schema_extra=_every_field_present)
