"""The dashboard's static files (SPEC 13): ``GET /ui`` and ``GET /ui/static/{name}``.

The files ship in the wheel (``workqueue/producer/ui/``): plain HTML, CSS and JavaScript, no
build step, nothing loaded from another host. They hold no data, so they are served without
the API key (the page then asks for it; every data route needs it). Every answer carries a
strict Content-Security-Policy: only this origin's scripts, styles, images and requests; no
inline script, no framing.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from litestar import Response, get
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath

__all__ = ["CSP", "build_ui_routes"]

#: the policy of every /ui answer
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}
_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def _file(name: str) -> bytes:
    return (resources.files("workqueue.producer") / "ui" / name).read_bytes()


def _serve(name: str) -> Response[bytes]:
    if name not in _TYPES:
        raise NotFoundException(detail=f"no such file: {name[:100]!r}")
    return Response(_file(name), media_type=_TYPES[name], headers=_HEADERS)


async def ui_page() -> Response[bytes]:
    return _serve("index.html")


async def ui_static(name: FromPath[str]) -> Response[bytes]:
    return _serve(name)


def build_ui_routes() -> list[HTTPRouteHandler]:
    """The static routes; public (they hold no data), out of the OpenAPI document."""
    opts: dict[str, Any] = {"opt": {"public": True}, "include_in_schema": False}
    return [
        get("/ui", **opts)(ui_page),
        get("/ui/static/{name:str}", **opts)(ui_static),
    ]
