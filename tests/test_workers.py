"""Media worker processes (`--workers N`): real node, real workers, ffmpeg and aiortc viewers."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from airclass_media.ice import restrict_host_addresses
from airclass_web.delivery.workers.admission import Admission, NodeFull, TooManySessions
from airclass_web.delivery.workers.pool import split_port_range

from .support import (
    TEST_HOST,
    NodeProcess,
    async_wait_for,
    ffmpeg_publish,
    http_json,
    wait_for,
)


def publish(node, stream: str, processes) -> None:
    token = node.token(stream, user_type="teacher", action="publish")["token"]
    processes.append(ffmpeg_publish(node.rtmp_url(stream, token), seconds=120, size="640x360"))
    wait_for(lambda: stream_status(node, stream).get("width"), 20, f"{stream} live")


def stream_status(node, stream: str) -> dict:
    status, body, _ = http_json("GET", f"{node.url}/api/streams/{stream}")
    return body if status == 200 else {}


def worker_of(location: str) -> str:
    """The worker a session URL names: /live/NAME/whep/w<index>-<id>."""
    return location.rsplit("/", 1)[1].split("-", 1)[0]


def worker_pids(node) -> dict[int, int]:
    """Worker index -> pid, from the node process's children in /proc."""
    pid = node.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = {}
    for child in children:
        try:
            args = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"airclass_web.delivery.workers.worker" in args:
            found[int(args[args.index(b"--index") + 1])] = int(child)
    return found


def metric(node, name: str) -> float:
    text = http_json("GET", f"{node.url}/metrics")[1]
    line = next(x for x in text.splitlines() if x.startswith(name + " ") or x.startswith(name))
    return float(line.split()[-1])


async def offer_sdp() -> tuple[RTCPeerConnection, str]:
    restrict_host_addresses([TEST_HOST])  # gather on the test address only, as `players` does
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # None would mean Google's STUN
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def post_offer(http: aiohttp.ClientSession, grant: dict, sdp: str) -> tuple[int, dict]:
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {grant['token']}"}
    async with http.post(grant["whep_url"], data=sdp, headers=headers) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


async def test_viewers_on_both_workers_patch_and_delete_reach_theirs(
    node_factory, processes, players
):
    node = node_factory("--workers", "2")
    publish(node, "spread", processes)
    grants = [node.token("spread", user_id=f"s{i}") for i in range(2)]
    watchers = [await players(g["whep_url"], g["token"]) for g in grants]
    assert {worker_of(p.location) for p in watchers} == {"w0", "w1"}  # least-loaded first
    for player in watchers:
        stats = await player.wait_frames(video=20, audio=20, timeout=30)
        assert (stats.width, stats.height) == (640, 360)
    assert stream_status(node, "spread")["viewers"] == 2

    # Every viewer's status, from both workers, for teachers only.
    listing = f"{node.url}/api/streams/spread/viewers"
    assert http_json("GET", listing)[0] == 401
    student = {"Authorization": f"Bearer {grants[0]['token']}"}
    assert http_json("GET", listing, headers=student)[0] == 403
    teacher = node.token("spread", user_type="teacher", action="publish")["token"]
    status, body, _ = http_json("GET", listing, headers={"Authorization": f"Bearer {teacher}"})
    assert status == 200
    assert sorted(v["worker"] for v in body["viewers"]) == [0, 1]
    assert {v["user_id"] for v in body["viewers"]} == {"s0", "s1"}
    # The listing shows public ids; the Location adds the secret that ends the session.
    public_ids = {p.location.rsplit("/", 1)[1].split(".")[0] for p in watchers}
    assert {v["id"] for v in body["viewers"]} == public_ids

    # PATCH reaches the worker that holds the session, and only that one.
    first, second = watchers
    frag = {"Content-Type": "application/trickle-ice-sdpfrag"}
    candidate = f"a=mid:0\r\na=candidate:1 1 udp 2130706431 {TEST_HOST} 9 typ host\r\n".encode()
    assert http_json("PATCH", first.location, candidate, frag)[0] == 204
    restart = b"a=ice-ufrag:brandnew\r\na=ice-pwd:brandnewpasswordbrandnew\r\n"
    status, answer, headers = http_json("PATCH", first.location, restart, frag)
    assert status == 200 and "a=ice-ufrag:" in answer, answer  # ICE restart on its worker
    assert headers["Content-Type"].startswith("application/trickle-ice-sdpfrag")
    plain = {"Content-Type": "text/plain"}
    assert http_json("PATCH", first.location, candidate, plain)[0] == 415
    session_id = first.location.rsplit("/", 1)[1]
    other = "w1" if session_id.startswith("w0") else "w0"
    misrouted = first.location.replace(session_id, other + session_id[2:])
    assert http_json("PATCH", misrouted, candidate, frag)[0] == 404
    assert http_json("DELETE", misrouted)[0] == 404

    # DELETE ends it on its worker; again -> 200 (idempotent), unknown -> 404.
    assert http_json("DELETE", second.location)[0] == 200
    await async_wait_for(lambda: stream_status(node, "spread")["viewers"] == 1, 10, "1 viewer")
    assert http_json("DELETE", second.location)[0] == 200
    assert http_json("DELETE", f"{node.url}/live/spread/whep/w0-nosuchsession")[0] == 404
    await first.wait_frames(video=20, timeout=20)  # the other viewer plays on

    # The WHEP reference client closes its peer connection before DELETE: still 200.
    await first.pc.close()
    await async_wait_for(lambda: stream_status(node, "spread")["viewers"] == 0, 20, "0 viewers")
    assert http_json("DELETE", first.location)[0] == 200

    text = http_json("GET", f"{node.url}/metrics")[1]
    for line in (
        'airclass_worker_cpu_seconds_total{worker="ingest"}',
        'airclass_worker_cpu_seconds_total{worker="0"}',
        'airclass_worker_cpu_seconds_total{worker="1"}',
        'airclass_worker_up{worker="1"} 1.0',
        "airclass_webrtc_sessions_opened_total 2.0",
    ):
        assert line in text, line


async def test_killed_worker_loses_only_its_viewers_and_comes_back(
    node_factory, processes, players
):
    node = node_factory("--workers", "2")
    publish(node, "sturdy", processes)
    grants = [node.token("sturdy", user_id=f"k{i}") for i in range(2)]
    watchers = {}
    for grant in grants:
        player = await players(grant["whep_url"], grant["token"])
        watchers[worker_of(player.location)] = player
    assert set(watchers) == {"w0", "w1"}
    for player in watchers.values():
        await player.wait_frames(video=15, timeout=30)
    pids = worker_pids(node)
    assert set(pids) == {0, 1}

    os.kill(pids[1], signal.SIGKILL)
    await async_wait_for(lambda: stream_status(node, "sturdy")["viewers"] == 1, 10, "1 viewer")
    await watchers["w0"].wait_frames(video=30, timeout=20)  # the other worker's viewer plays on
    await async_wait_for(
        lambda: worker_pids(node).get(1) not in (None, pids[1]), 20, "worker 1 restarted"
    )
    await async_wait_for(
        lambda: metric(node, 'airclass_worker_up{worker="1"}') == 1, 20, "worker 1 up"
    )
    assert metric(node, 'airclass_worker_restarts_total{worker="1"}') == 1

    grant = node.token("sturdy", user_id="k-new")
    newcomer = await players(grant["whep_url"], grant["token"])
    assert worker_of(newcomer.location) == "w1"  # least loaded again
    await newcomer.wait_frames(video=15, audio=10, timeout=30)
    assert stream_status(node, "sturdy")["viewers"] == 2
    assert worker_pids(node)[0] == pids[0]  # worker 0 was never touched


async def test_concurrent_offers_never_overshoot_capacity(node_factory):
    node = node_factory("--workers", "2", "--capacity", "3", "--max-viewers-per-user", "2")
    node.token("crowd", user_type="teacher", action="publish")  # announced, not live
    grants = [node.token("crowd", user_id=f"c{i}") for i in range(10)]
    offers = [await offer_sdp() for _ in grants]
    try:
        async with aiohttp.ClientSession() as http:
            results = await asyncio.gather(
                *(post_offer(http, g, sdp) for g, (_, sdp) in zip(grants, offers, strict=True))
            )
            statuses = sorted(status for status, _ in results)
            assert statuses == [201] * 3 + [503] * 7, statuses
            assert all(h["Retry-After"] for s, h in results if s == 503)
            assert stream_status(node, "crowd")["viewers"] == 3
            for status, headers in results:  # free every slot again
                if status == 201:
                    assert http_json("DELETE", node.url + headers["Location"])[0] == 200
            # Per-user cap: a third session of the same user is refused with 429.
            same = node.token("crowd", user_id="twice")
            codes = [(await post_offer(http, same, sdp))[0] for _, sdp in offers[:3]]
            assert codes == [201, 201, 429], codes
    finally:
        for pc, _ in offers:
            await pc.close()


def test_admission_counts_reserve_and_release():
    admission = Admission(capacity=5, per_user=2, per_ip=2)
    first = admission.reserve("u1", "10.0.0.1")
    admission.reserve("u1", "10.0.0.2")
    with pytest.raises(TooManySessions):
        admission.reserve("u1", "10.0.0.3")  # user cap
    admission.reserve("u2", "10.0.0.1")
    with pytest.raises(TooManySessions):
        admission.reserve("u3", "10.0.0.1")  # address cap
    admission.reserve("u3", "10.0.0.4")
    admission.reserve("u4", "10.0.0.5")
    with pytest.raises(NodeFull):
        admission.reserve("u5", "10.0.0.6")
    first.release()
    first.release()  # idempotent
    assert admission.total == 4
    admission.reserve("u1", "10.0.0.1")
    assert admission.refused == {"user": 1, "ip": 1, "capacity": 1}


def test_udp_port_range_is_split_between_workers():
    assert split_port_range((40000, 40199), 2) == ["40000-40099", "40100-40199"]
    assert split_port_range((40000, 40010), 3) == ["40000-40002", "40003-40005", "40006-40010"]
    assert split_port_range(None, 2) == ["", ""]


async def test_nodes_sharing_a_data_dir_keep_their_own_worker_sockets(tmp_path, processes, players):
    """Two nodes on one data directory (a one-machine cluster): the one started last does
    not take over the other's media-worker sockets, and killing it (kill -9) leaves the
    other serving viewers."""
    shared = tmp_path / "shared-data"
    first = NodeProcess(tmp_path, "--workers", "2", name="first")
    second = NodeProcess(tmp_path, "--workers", "2", name="second")
    nodes = [first, second]
    try:
        for node in nodes:
            node.args[node.args.index(str(node.data_dir))] = str(shared)
            node.data_dir = shared
            node.start()
        os.kill(second.proc.pid, signal.SIGKILL)  # its workers lose their node and exit
        second.kill()
        publish(first, "shared", processes)
        for i in range(2):  # one viewer on each of the first node's workers
            grant = first.token("shared", user_id=f"s{i}")
            player = await players(grant["whep_url"], grant["token"])
            await player.wait_frames(video=15, timeout=30)
    finally:
        for node in nodes:
            node.stop()
