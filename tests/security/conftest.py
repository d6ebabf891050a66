"""The real app in-process, without a worker (jobs stay queued), on a fresh data folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tuneforge.api.app import create_app
from tuneforge.config import Settings


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """`make_client(**settings)`: a client of a worker-less app over `tmp_path/data`; the
    Host it sends is 127.0.0.1, as a local client's."""
    opened: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = Settings(home=tmp_path / "data", **overrides)
        client = TestClient(create_app(settings, run_worker=False), base_url="http://127.0.0.1",
                            raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()
