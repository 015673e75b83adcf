"""Delivery: how a stream reaches its viewers and a teacher's browser publishes, over HTTP.

- `media`: the node's media services (RTMP ingest, WebRTC egress in this process or in
  media workers, admission, viewer grants).
- `media_routes`: WHEP (play), stream listing and viewers; `whip_routes`: WHIP (publish
  from a browser); `hls_routes`: the LL-HLS fallback; `ice_servers`: STUN/TURN servers
  handed to browsers.
- `workers/`: media worker processes (one per core), their admission and routing.

The media engine itself (`airclass_media`) knows nothing of HTTP; this package is its web
face.
"""
