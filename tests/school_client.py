"""A class behind one address, as its own process: N students get a token (join code, or
/api/token on a public stream) and watch over WHEP, all at once, from one client address
(X-Forwarded-For through the node's trusted proxy). Real ICE + DTLS + SRTP per student
(scripts/loadgen.py's cheap RTP counting); 429/503 are retried after Retry-After, as the
student page does. Prints JSON lines: {"event": "watching", "n": N, "seconds": S} once
every student has RTP, then keeps the sessions until killed (kill -9 is a Wi-Fi drop: no
DELETE, no DTLS close). Identities are kept in --state, so a second run is the same class
coming back (same join tokens; same user ids on /api/token, as the page keeps its id).

    python tests/school_client.py URL --join CODE --students 450 --ip 203.0.113.9 --state F
    python tests/school_client.py URL --stream NAME --students 450 --ip ... --state F
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import aiohttp  # noqa: E402
import loadgen  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402

from airclass_media.ice import restrict_host_addresses  # noqa: E402

#: Give up on one request after this long (the node queues offers up to 10 s).
REQUEST_TIMEOUT = 40


def say(**fields) -> None:
    print(json.dumps(fields), flush=True)


class Student:
    def __init__(self, index: int, args: argparse.Namespace, state: dict) -> None:
        self.index, self.args = index, args
        self.identity = state.setdefault(str(index), {})
        self.viewer = loadgen.Viewer(index)
        self.retries = 0
        self.granted = False
        self.refused = ""

    async def _post(self, http: aiohttp.ClientSession, url: str, **kw) -> tuple[int, str, dict]:
        """POST, retried after Retry-After on 429 / 503, as the student page does."""
        headers = {"X-Forwarded-For": self.args.ip, **kw.pop("headers", {})}
        while True:
            async with http.post(url, headers=headers, **kw) as resp:
                text = await resp.text()
                if resp.status not in (429, 503):
                    return resp.status, text, dict(resp.headers)
                self.retries += 1
                self.refused = f"{resp.status} {url.split('?')[0][-30:]}: {text[:120]}"
                await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))

    async def grant(self, http: aiohttp.ClientSession) -> tuple[str, str]:
        base, ident = self.args.node, self.identity
        if self.args.join:
            if "token" not in ident:  # joined once: the page keeps its token
                body = {"join_code": self.args.join, "name": f"Student {self.index}"}
                status, text, _ = await self._post(http, base + "/api/sessions/join", json=body)
                if status != 200:
                    raise RuntimeError(f"join: {status} {text[:200]}")
                data = json.loads(text)
                ident.update(token=data["token"], whep_url=data["whep_url"])
            return ident["token"], ident["whep_url"]
        user = ident.setdefault("user_id", f"student-{self.index:04d}")
        url = f"{base}/api/token?stream={quote(self.args.stream)}&user_id={quote(user)}"
        status, text, _ = await self._post(http, url)
        if status != 200:
            raise RuntimeError(f"/api/token: {status} {text[:200]}")
        data = json.loads(text)
        return data["token"], data["whep_url"]

    async def watch(self, http: aiohttp.ClientSession) -> None:
        viewer = self.viewer
        viewer.started = time.monotonic()
        token, whep_url = await self.grant(http)
        self.granted = True
        pc = viewer.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        for kind in ("video", "audio"):
            transceiver = pc.addTransceiver(kind, direction="recvonly")
            loadgen._VIEWERS_BY_CONNECTION[transceiver.receiver.transport.transport._connection] = (
                viewer
            )
        await pc.setLocalDescription(await pc.createOffer())
        headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
        status, answer, resp_headers = await self._post(
            http, whep_url, data=pc.localDescription.sdp, headers=headers
        )
        if status != 201:
            raise RuntimeError(f"WHEP POST {status}: {answer[:200]}")
        viewer.pt_kinds = loadgen.payload_kinds(answer)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))


async def progress(students: list[Student], started: float) -> None:
    """Every 2 s on stderr: how far the class got."""
    while True:
        await asyncio.sleep(2)
        v = [s.viewer for s in students]
        print(
            json.dumps(
                {
                    "t": round(time.monotonic() - started, 1),
                    "granted": sum(1 for s in students if s.granted),
                    "answered": sum(1 for x in v if x.pt_kinds),
                    "connected": sum(
                        1 for x in v if x.pc is not None and x.pc.connectionState == "connected"
                    ),
                    "rtp": sum(1 for x in v if x.first_rtp_at is not None),
                    "retries": sum(s.retries for s in students),
                    "refused": sorted({s.refused for s in students if s.refused})[:3],
                }
            ),
            file=sys.stderr,
            flush=True,
        )


def share_one_certificate() -> None:
    """Every student's peer connection uses one DTLS certificate: 450 browsers each have
    their own, but this one process should spend its CPU on the handshakes, not on keys."""
    import aiortc.rtcpeerconnection as module

    one = module.RTCCertificate.generateCertificate()
    module.RTCCertificate.generateCertificate = staticmethod(lambda: one)


async def run(args: argparse.Namespace, state: dict) -> None:
    restrict_host_addresses([args.ice_host])
    loadgen.install_rtp_counter()
    share_one_certificate()
    students = [Student(i, args, state) for i in range(args.students)]
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=0)  # 450 browsers do not share a socket pool
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    asyncio.ensure_future(progress(students, started))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        results = await asyncio.gather(*(s.watch(http) for s in students), return_exceptions=True)
        errors = [f"{type(r).__name__}: {r}"[:200] for r in results if isinstance(r, BaseException)]
        await asyncio.to_thread(Path(args.state).write_text, json.dumps(state))
        say(
            event="answered",
            seconds=round(time.monotonic() - started, 2),
            errors=errors[:5],
            failed=len(errors),
            retries=sum(s.retries for s in students),
        )
        while True:  # until every student has RTP, then report and hold on
            watching = sum(1 for s in students if s.viewer.first_rtp_at is not None)
            if watching == len(students):
                say(event="watching", n=watching, seconds=round(time.monotonic() - started, 2))
                break
            await asyncio.sleep(0.1)
        await asyncio.Event().wait()  # the test kills us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("node")
    parser.add_argument("--join", help="join code: students join the class session")
    parser.add_argument("--stream", help="public stream: tokens from /api/token")
    parser.add_argument("--students", type=int, default=450)
    parser.add_argument("--ip", required=True, help="the school's one public address")
    parser.add_argument("--ice-host", required=True)
    parser.add_argument("--state", required=True, help="JSON file of the students' identities")
    import uvloop

    args = parser.parse_args()
    path = Path(args.state)
    uvloop.run(run(args, json.loads(path.read_text()) if path.exists() else {}))


if __name__ == "__main__":
    main()
