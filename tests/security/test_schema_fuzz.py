"""schemathesis against the real app's OpenAPI schema (in-process, real SQLite, no worker,
so that no generated job trains), every operation: no 5xx, every invalid payload gets a 4xx,
every status is one the operation documents, and every response, errors included, matches
the schema and content type documented for it (tests/api/test_openapi.py checks that each
operation documents them)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tuneforge.api.app import create_app
from tuneforge.config import Settings

CHECKS = [
    not_a_server_error,
    negative_data_rejection,
    response_schema_conformance,
    content_type_conformance,
    status_code_conformance,
]
# Enough to find what the schema lets through, few enough to finish in about two minutes.
EXAMPLES = 8


HOME = Path(tempfile.mkdtemp(prefix="tuneforge-fuzz-"))
APP = create_app(
    Settings(
        home=HOME / "data",
        # schemathesis' in-process client sends `Host: testserver`.
        allowed_hosts=["testserver"],
        rate_limit_per_minute=10**6,
        rate_limit_burst=10**6,
        max_queued_jobs_per_key=10**6,
    ),
    run_worker=False,
)
# Every operation, the event streams included: no generated job id names a job, so a stream
# answers 404 at once (tests/api/test_events_stream.py follows real ones).
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# The coverage phase's requests with methods a path does not have (405 each) add minutes and
# find nothing the router does not already answer.
schema.config.phases.coverage.unexpected_methods = set()
# 413 (a body over the limit, refused while it streams) is a rejection too.
_rejection = schema.config.checks.negative_data_rejection
_rejection.expected_statuses = [*_rejection.expected_statuses, "413"]


@pytest.fixture(scope="module", autouse=True)
def _remove_home():
    yield
    shutil.rmtree(HOME, ignore_errors=True)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case) -> None:
    checks = CHECKS
    if case.operation.label == "POST /v1/files":
        # Any bytes are a file: a multipart part cannot be "not a string". What a file holds
        # is checked by validation (status "error" and its report), not refused.
        checks = [c for c in CHECKS if c is not negative_data_rejection]
    case.call_and_validate(checks=checks)

