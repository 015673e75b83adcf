"""HTML pages (jinja2 templates + static/)."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import aiohttp_jinja2
from aiohttp import web

from .auth import STREAM_NAME
from .http import visible_streams
from .node import node_of

#: Where sign-in goes when `next` is missing or not a path of this node.
DEFAULT_NEXT = "/teacher"
_UNSAFE = re.compile(r"[\\\x00-\x20\x7f]")  # backslash, controls, spaces
_ENCODED_DOT = re.compile(r"%2e", re.IGNORECASE)  # browsers read %2e as "." in paths


def safe_next(next_url: str | None, origin: str) -> str:
    """A path of `origin` to go to after signing in, else DEFAULT_NEXT (no open redirect).

    The URL is resolved against the node's own origin and the origins compared; so is
    the path handed back, since "/.//evil.example/x" normalises to the path
    "//evil.example/x", which a browser reads as another host. static/login.js does the
    same in the page (AirLogin.safeNext)."""
    if not next_url or not next_url.startswith("/") or _UNSAFE.search(next_url):
        return DEFAULT_NEXT
    base = urlsplit(origin)
    try:
        url = urlsplit(urljoin(origin + "/", _ENCODED_DOT.sub(".", next_url)))
    except ValueError:
        return DEFAULT_NEXT
    if (url.scheme, url.netloc) != (base.scheme, base.netloc) or url.path.startswith("//"):
        return DEFAULT_NEXT
    path = (
        url.path
        + (f"?{url.query}" if url.query else "")
        + (f"#{url.fragment}" if url.fragment else "")
    )
    again = urlsplit(urljoin(origin + "/", path))
    return path if (again.scheme, again.netloc) == (base.scheme, base.netloc) else DEFAULT_NEXT


@aiohttp_jinja2.template("login.html")
async def login(request: web.Request) -> dict:
    """The sign-in page; `next` (already checked here) is where it goes afterwards."""
    origin = f"{request.scheme}://{request.host}"
    return {"next": safe_next(request.query.get("next"), origin)}


@aiohttp_jinja2.template("index.html")
async def index(request: web.Request) -> dict:
    node = node_of(request)
    visible = await visible_streams(request, [s.name for s in node.hub.streams()])
    streams = [s.status() for s in node.hub.streams() if s.name in visible]
    return {"streams": streams}


@aiohttp_jinja2.template("student.html")
async def student(request: web.Request) -> dict:
    stream = request.query.get("stream", "demo")
    if not STREAM_NAME.match(stream):
        stream = "demo"
    return {"stream": stream}


def setup(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/student", student)
    app.router.add_get("/login", login)
