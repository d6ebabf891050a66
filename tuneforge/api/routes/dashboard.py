"""The dashboard: one HTML page at `/` and its scripts and styles under `/dashboard/`.

Everything it shows comes from the REST API and the event stream; these routes only hand
the browser the files in `tuneforge/dashboard/static` (no build step, nothing from outside).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from tuneforge.dashboard import STATIC, asset
from tuneforge.errors import NotFoundError

router = APIRouter(include_in_schema=False)

# Module scripts need a JavaScript type; the browser refuses them otherwise.
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
               ".svg": "image/svg+xml"}
# The files change with the installed version only, but a reload should see a new one.
HEADERS = {"Cache-Control": "no-cache"}


@router.api_route("/", methods=["GET", "HEAD"])
def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)


@router.api_route("/dashboard/{name}", methods=["GET", "HEAD"])
def static_file(name: str) -> FileResponse:
    path = asset(name)
    if path is None:
        raise NotFoundError(f"The dashboard has no file {name!r}.", param="name")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS)
