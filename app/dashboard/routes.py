"""GET /admin: the dashboard page and its two assets; `/` points there. No CDN, no build step."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from starlette.responses import RedirectResponse, Response

from app.errors import KeypoolError

router = APIRouter(include_in_schema=False)
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The page and its assets come from this origin only; inline SVG needs no source at all.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Frame-Options": "DENY"}


class NotFound(KeypoolError):
    status_code = 404
    type = "not_found"


@cache
def _read(name: str) -> bytes:
    return (files("app.dashboard") / "static" / name).read_bytes()


@router.get("/")
async def root() -> Response:
    return RedirectResponse("/admin", status_code=307)


@router.get("/admin")
async def dashboard() -> Response:
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/admin/static/{name}")
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no dashboard asset {name!r}")
    return Response(_read(name), media_type=media_type, headers=HEADERS)
