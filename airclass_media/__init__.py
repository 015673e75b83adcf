"""AIRClass media: RTMP ingest, stream hub, H.264/AAC handling, WebRTC (WHEP) egress.

Knows nothing of HTTP routes.
"""
