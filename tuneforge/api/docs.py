"""The API reference at `/docs` (Swagger UI) and `/redoc` (ReDoc), served by the process
itself: their scripts and styles come from the `fastapi-offline` package's static folder, so
the pages work on a machine with no internet (FastAPI's own pages load them from a CDN)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS_PATH = "/docs/assets"
# The files taken from the package.
SWAGGER_JS = "swagger-ui-bundle.js"
SWAGGER_CSS = "swagger-ui.css"
REDOC_JS = "redoc.standalone.js"
FAVICON = "favicon.png"


def assets_folder() -> Path:
    """The package folder holding Swagger UI's and ReDoc's built files (found without
    importing the package)."""
    spec = find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("fastapi-offline is not installed; `pip install tuneforge` brings it")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def install(app: FastAPI) -> None:
    """Serve `/docs`, `/redoc` and their assets on `app` (created with docs_url=None and
    redoc_url=None)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_folder()), name="docs-assets")
    title = f"{app.title} API"

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            swagger_js_url=f"{ASSETS_PATH}/{SWAGGER_JS}",
            swagger_css_url=f"{ASSETS_PATH}/{SWAGGER_CSS}",
            swagger_favicon_url=f"{ASSETS_PATH}/{FAVICON}",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=title,
            redoc_js_url=f"{ASSETS_PATH}/{REDOC_JS}",
            redoc_favicon_url=f"{ASSETS_PATH}/{FAVICON}",
            with_google_fonts=False,
        )
