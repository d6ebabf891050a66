"""Every code a failed job's `error.code` may carry is listed in the README, and nothing else
reaches a job's error (tuneforge.jobs.runner records any other code as `internal`)."""

from __future__ import annotations

import re

from tests.conftest import ROOT
from tuneforge.jobs.runner import JOB_ERROR_CODES


def test_the_readme_lists_every_job_error_code() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("A failed job's `error.code` is one of")
    paragraph = readme[start : readme.index("\nA run that crashes", start)]
    listed = set(re.findall(r"`([a-z_]+)`", paragraph)) - {"code"}
    assert listed == JOB_ERROR_CODES
