"""`airclass monitor`: a cluster summary in the terminal, alerts to a chat webhook.

Each round reads the main's /cluster/nodes and every node's /ready (neither needs
credentials). Incidents (node down, node not ready, node full, cluster over 80 %, disk
low) are posted to a Slack/Discord-style webhook once when they start and once when they
end. Nodes are known by URL: a restarted sub (a new node id) is the same node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import aiohttp

log = logging.getLogger(__name__)

#: Cluster load (% of capacity) from which an incident says "add a sub node".
CLUSTER_LOAD_ALERT = 80.0
REQUEST_TIMEOUT = 5.0


class MainUnreachable(Exception):
    """The main node did not give its node list."""


@dataclass
class Incident:
    key: str
    kind: str
    message: str


@dataclass
class MonitorState:
    """What the monitor knows between rounds."""

    #: Node URL -> (node id, role) of every node seen since the monitor started.
    known: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Open incidents by key.
    active: dict[str, Incident] = field(default_factory=dict)


async def _get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(url) as resp:
        try:
            body = await resp.json(content_type=None)
        except (ValueError, aiohttp.ContentTypeError):
            body = {}
        return resp.status, body if isinstance(body, dict) else {}


async def _ready(http: aiohttp.ClientSession, url: str) -> dict:
    try:
        status, body = await _get_json(http, url.rstrip("/") + "/ready")
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return {"reachable": False, "ready": False, "down": [type(exc).__name__], "warnings": []}
    return {
        "reachable": True,
        "ready": status == 200,
        "down": list(body.get("down", [])) if status != 200 else [],
        "warnings": list(body.get("warnings", [])),
    }


async def survey(http: aiohttp.ClientSession, main_url: str, state: MonitorState) -> dict:
    """One round: the cluster summary with its incidents (state remembers nodes)."""
    main_url = main_url.rstrip("/")
    incidents: list[Incident] = []
    try:
        status, body = await _get_json(http, main_url + "/cluster/nodes")
        if status != 200:
            raise MainUnreachable(f"/cluster/nodes answered {status}")
        records = list(body.get("nodes", []))
        main_ok = True
    except (MainUnreachable, aiohttp.ClientError, OSError, TimeoutError) as exc:
        records, main_ok = [], False
        incidents.append(
            Incident("main_down", "main_down", f"main node {main_url} unreachable: {exc}")
        )
    readiness = await asyncio.gather(*(_ready(http, r["url"]) for r in records))
    nodes = []
    present = set()
    for record, ready in zip(records, readiness, strict=True):
        url = record["url"].rstrip("/")
        present.add(url)
        state.known[url] = (record["node_id"], record["role"])
        capacity = int(record.get("capacity") or 0)
        load = int(record.get("load") or 0)
        node = {
            "node_id": record["node_id"],
            "role": record["role"],
            "url": url,
            "status": record.get("status", "ok") if ready["ready"] else "not_ready",
            "load": load,
            "capacity": capacity,
            "load_percentage": round(100.0 * load / capacity, 1) if capacity else 0.0,
            "streams": record.get("streams", []),
            "ready": ready["ready"],
            "down": ready["down"],
            "warnings": ready["warnings"],
        }
        nodes.append(node)
        name = f"{record['role']} {url}"
        if not ready["ready"]:
            what = ", ".join(ready["down"]) or "unknown"
            incidents.append(Incident(f"node:{url}", "node_down", f"{name} not ready: {what}"))
        if capacity and load >= capacity:
            incidents.append(
                Incident(f"full:{url}", "over_capacity", f"{name} is full ({load}/{capacity})")
            )
        for warning in ready["warnings"]:
            if "disk" in warning:
                incidents.append(Incident(f"disk:{url}", "disk_low", f"{name}: {warning}"))
    if main_ok:
        for url, (node_id, role) in state.known.items():
            if url not in present:
                nodes.append({"node_id": node_id, "role": role, "url": url, "status": "down"})
                incidents.append(
                    Incident(f"node:{url}", "node_down", f"{role} {url} ({node_id}) is down")
                )
    load = sum(n.get("load", 0) for n in nodes)
    capacity = sum(n.get("capacity", 0) for n in nodes)
    percentage = round(100.0 * load / capacity, 1) if capacity else 0.0
    if percentage >= CLUSTER_LOAD_ALERT:
        incidents.append(
            Incident(
                "cluster_load",
                "over_capacity",
                f"cluster at {percentage}% of its capacity ({load}/{capacity}): add a sub node",
            )
        )
    return {
        "time": time.time(),
        "main_url": main_url,
        "main_reachable": main_ok,
        "cluster": {"load": load, "capacity": capacity, "load_percentage": percentage},
        "nodes": nodes,
        "incidents": [{"key": i.key, "kind": i.kind, "message": i.message} for i in incidents],
    }


def changes(state: MonitorState, summary: dict) -> tuple[list[Incident], list[Incident]]:
    """(incidents that started, incidents that ended) since the last round."""
    now = {i["key"]: Incident(**i) for i in summary["incidents"]}
    started = [i for key, i in now.items() if key not in state.active]
    ended = [i for key, i in state.active.items() if key not in now]
    state.active = now
    return started, ended


async def post_alert(http: aiohttp.ClientSession, webhook: str, text: str) -> None:
    """Slack ("text") and Discord ("content") incoming webhooks both take this body."""
    try:
        async with http.post(webhook, json={"text": text, "content": text}) as resp:
            if resp.status >= 300:
                log.warning("alert webhook answered %s", resp.status)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        log.warning("alert webhook unreachable: %s", exc)


def render(summary: dict) -> str:
    """The summary as a terminal table."""
    c = summary["cluster"]
    lines = [
        f"AIRClass cluster at {summary['main_url']}: {len(summary['nodes'])} nodes, "
        f"{c['load']}/{c['capacity']} viewers ({c['load_percentage']}%)",
        f"{'ROLE':<10} {'STATUS':<10} {'LOAD':>11} {'NODE':<16} URL",
    ]
    for n in summary["nodes"]:
        load = f"{n.get('load', '-')}/{n.get('capacity', '-')}"
        lines.append(f"{n['role']:<10} {n['status']:<10} {load:>11} {n['node_id']:<16} {n['url']}")
    for incident in summary["incidents"]:
        lines.append(f"! {incident['message']}")
    if not summary["incidents"]:
        lines.append("no incidents")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    state = MonitorState()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while True:
            summary = await survey(http, args.main_url, state)
            started, ended = changes(state, summary)
            if args.alert_webhook:
                for incident in started:
                    await post_alert(http, args.alert_webhook, f"[AIRClass] {incident.message}")
                for incident in ended:
                    await post_alert(
                        http, args.alert_webhook, f"[AIRClass] resolved: {incident.message}"
                    )
            if args.json:
                print(json.dumps(summary), flush=True)
            else:
                print(render(summary) + "\n", flush=True)
            if not args.watch:
                return 1 if summary["incidents"] else 0
            try:
                await asyncio.wait_for(stop.wait(), args.watch)
                return 0
            except TimeoutError:
                continue


def monitor(args: argparse.Namespace) -> int:
    if args.watch is not None and args.watch <= 0:
        print("airclass: --watch needs a positive number of seconds", file=sys.stderr)
        return 2
    return asyncio.run(run(args))


def _env(name: str) -> str:
    return os.environ.get("AIRCLASS_" + name, "")


def add_monitor_command(commands) -> None:
    parser = commands.add_parser(
        "monitor",
        help="cluster summary; alerts to a chat webhook",
        description="Summarise a cluster from its main node (/cluster/nodes and every "
        "node's /ready). Exit status 1 when something needs attention (without --watch). "
        "With --alert-webhook, incidents (node down, over capacity, disk low) are posted "
        "once when they start and once when they end.",
    )
    parser.add_argument(
        "--main-url", default=_env("MAIN_URL"), required=not _env("MAIN_URL"),
        help="main node URL [AIRCLASS_MAIN_URL]",
    )  # fmt: skip
    parser.add_argument(
        "--watch", type=float, default=None, metavar="SECONDS",
        help="repeat every SECONDS until interrupted",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON object per round")
    parser.add_argument(
        "--alert-webhook", default=_env("ALERT_WEBHOOK"), metavar="URL",
        help="Slack/Discord-style incoming webhook for alerts [AIRCLASS_ALERT_WEBHOOK]",
    )  # fmt: skip
    parser.set_defaults(handler=monitor)
