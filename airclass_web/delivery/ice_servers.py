"""ICE servers for viewers: the node's STUN/TURN URLs and its TURN relays with short-lived
credentials (airclass_media.turn), as WHEP `Link` headers and as JSON for pages."""

from __future__ import annotations

from airclass_media.turn import IceServer, TurnCredentials

from ..config import Config


def viewer_ice_servers(config: Config, user_id: str | None) -> list[IceServer]:
    """--ice-server URLs, then the --turn-url relays with credentials for this viewer
    (none for an anonymous caller: credentials go only with a valid token)."""
    servers = [IceServer(url) for url in config.ice_servers]
    if user_id is not None:
        turn = TurnCredentials(config.turn_urls, config.turn_secret, config.turn_ttl)
        servers += turn.servers_for(user_id)
    return servers


def link_header(server: IceServer) -> tuple[str, str]:
    """`Link: <url>; rel="ice-server"[; username=..; credential=..]` (WHEP, section 4.6)."""
    value = f'<{server.url}>; rel="ice-server"'
    if server.username:
        value += (
            f'; username="{server.username}"; credential="{server.credential}"'
            '; credential-type="password"'
        )
    return ("Link", value)


def ice_servers_json(config: Config, user_id: str) -> list[dict]:
    """RTCIceServer dictionaries for a viewer's token answer."""
    return [s.as_dict() for s in viewer_ice_servers(config, user_id)]
