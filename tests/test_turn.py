"""TURN relay: a real coturn (static-auth-secret) on the test address; viewers whose UDP to
the node is dropped by nftables play through it over TCP; coturn refuses wrong and
expired credentials made by the node's scheme."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
from urllib.parse import quote

import pytest
from aiortc import RTCIceServer

from airclass_media.turn import turn_credentials

from .support import (
    TEST_HOST,
    async_http_json,
    async_wait_for,
    ffmpeg_publish,
    free_port,
    stop_process,
    wait_for,
)

TURN_SECRET = "turn-secret-0123456789abcdef0123456789"
NODE_UDP = "43400-43409"
RELAY_PORTS = (43500, 43599)

pytestmark = pytest.mark.skipif(
    TEST_HOST.startswith("127.") or not shutil.which("nft") or os.geteuid() != 0,
    reason="needs scripts/run-tests.sh's private network namespace, root and nft",
)


@pytest.fixture
def coturn(tmp_path):
    """Debian's coturn on TEST_HOST, TURN REST credentials (use-auth-secret), UDP and TCP,
    running as user turnserver (the packet filter tells its relay traffic apart by it)."""
    exe = shutil.which("turnserver")
    if exe is None:
        pytest.skip("coturn not installed (scripts/install-system.sh installs it)")
    port = free_port()
    log = open(tmp_path / "coturn.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            exe, "-n", "--listening-ip", TEST_HOST, "--relay-ip", TEST_HOST,
            "--listening-port", str(port), "--min-port", str(RELAY_PORTS[0]),
            "--max-port", str(RELAY_PORTS[1]), "--use-auth-secret",
            "--static-auth-secret", TURN_SECRET, "--realm", "airclass.test",
            "--allowed-peer-ip", TEST_HOST, "--no-tls", "--no-dtls", "--no-cli",
            "--fingerprint", "--log-file", "stdout", "--simple-log",
            "--proc-user", "turnserver", "--proc-group", "turnserver",
            "--pidfile", str(tmp_path / "coturn.pid"),
        ],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def listening():
        with socket.create_connection((TEST_HOST, port), timeout=1):
            return True

    try:
        wait_for(listening, 15, "coturn listening")
        yield port
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture
def udp_to_node_blocked(coturn):
    """nftables: UDP to the node's media ports only from coturn's relay (user turnserver);
    UDP to coturn itself dropped, so TURN works over TCP only."""
    rules = f"""
table ip airclass_turn_test {{
  chain out {{
    type filter hook output priority 0;
    ip daddr {TEST_HOST} udp dport {NODE_UDP} meta skuid != "turnserver" drop;
    ip daddr {TEST_HOST} udp dport {coturn} drop;
  }}
}}
"""
    subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
    yield coturn
    subprocess.run(["nft", "delete", "table", "ip", "airclass_turn_test"], check=False)


def turn_node_args(port: int) -> list[str]:
    return [
        "--udp-ports", NODE_UDP,
        "--turn-url", f"turn:{TEST_HOST}:{port}?transport=udp",
        "--turn-url", f"turn:{TEST_HOST}:{port}?transport=tcp",
    ]  # fmt: skip


async def start_node(node_factory, processes, port: int, stream: str):
    node = await asyncio.to_thread(
        node_factory, *turn_node_args(port), env={"AIRCLASS_TURN_SECRET": TURN_SECRET}
    )
    teacher = await node.atoken(stream, user_type="teacher", action="publish")
    processes.append(ffmpeg_publish(node.rtmp_url(stream, teacher["token"]), size="640x360"))

    async def live():
        status, body, _ = await async_http_json("GET", f"{node.url}/api/streams/{stream}")
        return status == 200 and body.get("width")

    await async_wait_for(live, 20, f"{stream} live")
    return node


async def test_aiortc_viewer_plays_through_coturn_over_tcp(
    node_factory, processes, players, udp_to_node_blocked
):
    port = udp_to_node_blocked
    node = await start_node(node_factory, processes, port, "relayed")
    grant = await node.atoken("relayed", user_id="kim")
    servers = grant["ice_servers"]
    assert [s["urls"][0] for s in servers] == [
        f"turn:{TEST_HOST}:{port}?transport=udp",
        f"turn:{TEST_HOST}:{port}?transport=tcp",
    ]
    username = servers[0]["username"]
    assert re.fullmatch(r"\d+:kim", username)
    # aiortc uses one TURN server: the TCP one (UDP to coturn is dropped anyway).
    tcp = servers[1]
    player = await players(
        grant["whep_url"],
        grant["token"],
        ice_servers=[RTCIceServer(tcp["urls"][0], tcp["username"], tcp["credential"])],
    )
    stats = await player.wait_frames(video=30, audio=25, timeout=40)
    assert (stats.width, stats.height) == (640, 360)
    ice = player.pc.getTransceivers()[0].receiver.transport.transport
    pair = ice._connection._nominated[1]
    assert pair.local_candidate.type == "relay"
    # The WHEP answer's Link headers carry credentials (WHEP: username, credential).
    status, _, headers = await async_http_json(
        "POST",
        grant["whep_url"],
        player.pc.localDescription.sdp.encode(),
        {"Content-Type": "application/sdp", "Authorization": f"Bearer {grant['token']}"},
    )
    assert status == 201
    links = headers.getall("Link")
    assert any(
        f"<turn:{TEST_HOST}:{port}?transport=tcp>" in link
        and 'username="' in link
        and 'credential="' in link
        for link in links
    ), links
    status, _, headers = await async_http_json("OPTIONS", grant["whep_url"])
    assert "credential" not in " ".join(headers.getall("Link", []))  # never anonymously


async def test_chromium_plays_through_coturn_over_tcp(
    node_factory, processes, browser, udp_to_node_blocked
):
    node = await start_node(node_factory, processes, udp_to_node_blocked, "relayedb")
    page = await browser.new_page(locale="en-US")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{node.url}/student?stream=relayedb")
    await page.wait_for_function(
        "() => document.getElementById('video').videoWidth === 640", timeout=30_000
    )
    frames = await page.evaluate("() => window.airclassPlayer.framesDecoded()")
    await page.wait_for_function(
        f"() => window.airclassPlayer.framesDecoded() > {frames + 30}", timeout=20_000
    )
    assert await page.evaluate("() => window.airclassPlayer.transport") == "webrtc"
    assert await page.evaluate("() => window.airclassPlayer.candidateType()") == "relay"
    assert not errors


async def allocate(port: int, username: str, password: str):
    """A TURN allocation over TCP with these credentials (aioice's TURN client)."""
    from aioice.turn import create_turn_endpoint

    transport, _ = await create_turn_endpoint(
        asyncio.DatagramProtocol, (TEST_HOST, port), username, password, transport="tcp"
    )
    return transport


async def test_coturn_refuses_wrong_and_expired_credentials(coturn):
    username, password = turn_credentials(TURN_SECRET, "lee", ttl=600)
    transport = await allocate(coturn, username, password)
    relayed = transport.get_extra_info("sockname")
    assert relayed[0] == TEST_HOST and RELAY_PORTS[0] <= relayed[1] <= RELAY_PORTS[1]
    transport.close()
    wrong_secret = turn_credentials("another-secret-0123456789abcdef", "lee", ttl=600)
    expired = turn_credentials(TURN_SECRET, "lee", ttl=600, now=__import__("time").time() - 3600)
    for user, pwd in (wrong_secret, (username, "x" + password), expired):
        with pytest.raises(Exception, match="401|Unauthorized"):  # noqa: PT011
            await allocate(coturn, user, pwd)
    assert quote(username, safe=":") == username  # plain characters in the username
