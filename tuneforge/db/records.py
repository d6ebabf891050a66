"""Rows as the store takes them, and the ids of new ones."""

from __future__ import annotations

import uuid
from typing import Any

# A row: column names to values (what insert_job, insert_file … take, and reads return).
Row = dict[str, Any]


def new_id(prefix: str) -> str:
    """A fresh id in OpenAI's style: `prefix-` and 32 hex digits."""
    return f"{prefix}-{uuid.uuid4().hex}"
