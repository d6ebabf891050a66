"""The API reference works with no internet: /docs and /redoc name only the server's own
assets (from the fastapi-offline package), and those answer with JavaScript and CSS."""

from __future__ import annotations

import re

import pytest

from tests.conftest import Server

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("page", "kinds"), [("/docs", {"js", "css"}), ("/redoc", {"js"})])
def test_reference_pages_load_their_assets_from_the_server(
    server: Server, page: str, kinds: set[str]
) -> None:
    html = server.client.get(page)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    urls = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert urls and all(url.startswith("/docs/assets/") for url in urls), urls
    assert "http://" not in html.text.replace(server.url, "") and "https://" not in html.text
    seen = set()
    for url in urls:
        asset = server.client.get(url)
        assert asset.status_code == 200, url
        kind = url.rsplit(".", 1)[-1]
        if kind in ("js", "css"):
            seen.add(kind)
            assert len(asset.content) > 10_000, url  # the real bundle, not an error page
            wanted = "javascript" if kind == "js" else "css"
            assert wanted in asset.headers["content-type"], (url, asset.headers)
    assert seen == kinds
    schema = server.client.get("/openapi.json")
    assert schema.status_code == 200 and schema.json()["info"]["title"] == "tuneforge"
