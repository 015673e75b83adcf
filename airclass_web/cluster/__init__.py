"""Cluster: node registry (Redis or in-process), viewer assignment, main -> sub relay.

`setup(app)` wires it into a node of any role; a standalone node only keeps an
in-process registry of itself.
"""

from __future__ import annotations

from aiohttp import web

from ..node import NODE
from .service import CLUSTER, Cluster

__all__ = ["CLUSTER", "Cluster", "setup"]


def setup(app: web.Application) -> None:
    node = app[NODE]
    cluster = Cluster(node)
    app[CLUSTER] = cluster
    node.add_service("cluster", cluster.start, cluster.stop)
    node.add_metrics(cluster.metrics)
    if cluster.role == "main":
        node.viewer_router = cluster.route_viewer
    if cluster.relays is not None:
        node.stream_resolver = cluster.relays.resolve
    node.claim_origin = cluster.claim_origin
    node.release_origin = cluster.release_origin
