"""Relay of encoded packets from a main node to sub nodes (no re-encode)."""
