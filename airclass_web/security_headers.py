"""Security headers on every response: CSP without inline script, framing, sniffing,
referrer; HSTS when the request came over TLS.

`setup(app)` installs a middleware (responses returned or raised by handlers, errors
included) and an `on_response_prepare` hook (responses a handler prepares itself, such as
WebSocket upgrades and streamed files, and aiohttp's own 500 pages). Headers a handler set
itself are kept. WHEP CORS headers are added by media_routes and are not touched here.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

#: Scripts and styles only from our own origin: no inline script, no eval. WHEP and the
#: classroom WebSocket may live on another node of the cluster (a sub's address), hence
#: connect-src allows any http(s)/ws(s) origin.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self' http: https: ws: wss:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=31536000; includeSubDomains"


def apply(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """Add the headers to a response that is not yet sent."""
    if response.prepared:
        return
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)


@web.middleware
async def security_headers_middleware(request: web.Request, handler):
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        apply(request, exc)
        raise
    apply(request, response)
    return response


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    apply(request, response)


def setup(app: web.Application) -> None:
    """Install on the app (before it is frozen)."""
    app.middlewares.insert(0, security_headers_middleware)
    app.on_response_prepare.append(_on_prepare)
