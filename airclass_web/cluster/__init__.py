"""Cluster: node registry (Redis or in-process), viewer assignment, main -> sub relay.

Built by the composition root for a node of any role (a standalone node only keeps an
in-process registry of itself); its `hooks()` go to the media services and routes, and
`setup(app, cluster)` registers it as a service.
"""

from __future__ import annotations

from aiohttp import web

from ..node import NODE
from .service import CLUSTER, Cluster

__all__ = ["CLUSTER", "Cluster", "setup"]


def setup(app: web.Application, cluster: Cluster) -> None:
    node = app[NODE]
    app[CLUSTER] = cluster
    node.add_service("cluster", cluster.start, cluster.stop)
    node.add_metrics(cluster.metrics)
