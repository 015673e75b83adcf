"""Media HTTP endpoints (WHEP, stream status). Filled in with the WebRTC module."""

from aiohttp import web


def setup(app: web.Application) -> None:
    pass
