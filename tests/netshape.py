"""A shaped link between a node and its viewers, for tests and benchmarks.

Inside the private network namespace of scripts/in-netns.sh (or scripts/run-tests.sh) a
`ShapedLink` starts a placeholder process (`unshare -n sleep infinity`) in a network
namespace of its own (the *viewer namespace*), joins it to the current one with a veth
pair on a /24 of its own (10.78.N.1 here, the node's end; 10.78.N.2 there), and shapes
what leaves the node's end: `tc` tbf for a rate, netem for loss, delay and jitter
where the kernel has it (this machine's has neither netem nor tc classifiers),
changeable while a test runs. `ShapedLink(emulated=True)` joins the two namespaces with
TUN devices and tests/linkemu.py instead of a veth pair: loss, rate, delay and jitter
per packet in user space, on any kernel (a Python process carries the packets: fine for
a few viewers' Mbit/s, not for a crowd's). The node binds and advertises `node_addr`;
programs run in the viewer namespace (`viewer_command`, `viewer_popen`), Chromium included
(`chromium_executable` writes a wrapper that nsenters before exec'ing Chromium, so
Playwright drives it through its pipe as usual). A publisher in the current namespace
reaches the node unshaped (a local address). Everything needs root.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .support import NodeProcess, wait_for

CHROMIUM = "/usr/bin/chromium"
LINKEMU = Path(__file__).with_name("linkemu.py")
_INDEX = itertools.count(1)


def unavailable() -> str | None:
    """Why a shaped link cannot be made here, or None when it can."""
    if os.geteuid() != 0:
        return "shaped links need root (scripts/run-tests.sh's network namespace)"
    if os.environ.get("AIRCLASS_IN_NETNS") != "1":
        return "shaped links are made inside scripts/in-netns.sh's private network namespace"
    for tool in ("ip", "tc", "nft", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/install-system.sh installs iproute2)"
    return None


def _run(*args: str) -> None:
    done = subprocess.run(args, capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")


@dataclass(frozen=True, slots=True)
class Shape:
    """What the link does to packets from the node to the viewers."""

    rate_kbit: float | None = None  # None: not rate limited
    loss_pct: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    burst_bytes: int = 32_000  # tbf bucket (a browser-grade home router holds a few)
    queue_ms: int = 200  # tbf: packets waiting longer than this are dropped

    def describe(self) -> str:
        parts = [f"{self.rate_kbit / 1000:g} Mbit/s" if self.rate_kbit else "unshaped"]
        if self.loss_pct:
            parts.append(f"{self.loss_pct:g}% loss")
        if self.delay_ms:
            parts.append(f"{self.delay_ms:g}±{self.jitter_ms:g} ms")
        return ", ".join(parts)


class ShapedLink:
    """A veth pair to a viewer namespace; tc on the node's end shapes what viewers get."""

    def __init__(self, emulated: bool = False) -> None:
        self.emulated = emulated
        self._emulator: subprocess.Popen | None = None
        index = next(_INDEX) % 250
        self.node_addr = f"10.78.{index}.1"
        self.viewer_addr = f"10.78.{index}.2"
        self.node_dev = f"acshn{index}"
        self.viewer_dev = f"acshv{index}"
        self.shape = Shape()
        self._placeholder: subprocess.Popen | None = None
        self._wrappers: list[Path] = []

    @property
    def pid(self) -> int:
        assert self._placeholder is not None, "open() first"
        return self._placeholder.pid

    def open(self) -> ShapedLink:
        reason = unavailable()
        if reason:
            raise RuntimeError(reason)
        own = os.readlink("/proc/self/ns/net")
        self._placeholder = subprocess.Popen(["unshare", "-n", "sleep", "infinity"])
        wait_for(
            lambda: os.readlink(f"/proc/{self.pid}/ns/net") != own,
            5,
            "the viewer namespace's placeholder process",
        )
        try:
            if self.emulated:
                self._start_emulator()
            else:
                _run(
                    "ip", "link", "add", self.node_dev, "type", "veth",
                    "peer", "name", self.viewer_dev,
                )  # fmt: skip
                _run("ip", "link", "set", self.viewer_dev, "netns", str(self.pid))
            _run("ip", "addr", "add", f"{self.node_addr}/24", "dev", self.node_dev)
            _run("ip", "link", "set", self.node_dev, "up")
            there = ("nsenter", "-t", str(self.pid), "-n")
            _run(*there, "ip", "link", "set", "lo", "up")
            _run(*there, "ip", "addr", "add", f"{self.viewer_addr}/24", "dev", self.viewer_dev)
            _run(*there, "ip", "link", "set", self.viewer_dev, "up")
            _run(*there, "ip", "route", "add", "default", "dev", self.viewer_dev)
            if not self.emulated:
                wait_for(self._carrier, 5, f"{self.node_dev} carrier")
        except BaseException:
            self.close()
            raise
        return self

    def _start_emulator(self) -> None:
        self._emulator = subprocess.Popen(
            [sys.executable, str(LINKEMU), self.node_dev, self.viewer_dev,
             f"/proc/{self.pid}/ns/net"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._ask_emulator(None, "ready")

    def _ask_emulator(self, command: object, expect: str | None = None) -> str:
        """Send one command (None: none) and read its one-line answer."""
        assert self._emulator is not None and self._emulator.stdin and self._emulator.stdout
        if command is not None:
            self._emulator.stdin.write(json.dumps(command) + "\n")
            self._emulator.stdin.flush()
        answer = self._emulator.stdout.readline().strip()
        if expect is not None and answer != expect:
            raise RuntimeError(f"link emulator answered {answer!r}, not {expect!r}")
        return answer

    def _carrier(self) -> bool:
        # /sys shows the namespace it was mounted in, not ours: ask ip.
        shown = subprocess.run(
            ["ip", "-br", "link", "show", "dev", self.node_dev],
            capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
        return " UP " in f" {shown} "

    def set(self, shape: Shape) -> None:
        """Shape what leaves the node's end from now on (replaces the previous shape).

        A rate is a tbf qdisc; loss, delay and jitter a netem qdisc above it, where the
        kernel has sch_netem (RuntimeError where it has none: `ShapedLink(emulated=True)`
        does all of it in tests/linkemu.py, per packet on any kernel)."""
        if self.emulated:
            self._ask_emulator(asdict(shape), "ok")
            self.shape = shape
            return
        subprocess.run(
            ["tc", "qdisc", "del", "dev", self.node_dev, "root"], capture_output=True, timeout=10
        )
        self.shape = shape
        dev = ("tc", "qdisc", "add", "dev", self.node_dev)
        tbf = []
        if shape.rate_kbit:
            tbf = ["tbf", "rate", f"{int(shape.rate_kbit)}kbit", "burst", str(shape.burst_bytes)]
            tbf += ["latency", f"{shape.queue_ms}ms"]
        if shape.delay_ms or shape.loss_pct:
            netem = ["netem", "limit", "10000", "delay", f"{shape.delay_ms}ms"]
            if shape.jitter_ms:
                netem += [f"{shape.jitter_ms}ms", "distribution", "normal"]
            if shape.loss_pct:
                netem += ["loss", f"{shape.loss_pct}%"]
            try:
                _run(*dev, "root", "handle", "1:", *netem)
            except RuntimeError as exc:
                raise RuntimeError(f"{exc} (no sch_netem? an emulated link has it all)") from exc
            if tbf:
                _run(*dev, "parent", "1:1", "handle", "10:", *tbf)
        elif tbf:
            _run(*dev, "root", *tbf)

    def shape_rate(self, mbit: float | None) -> None:
        """Only a rate limit (None: unshaped)."""
        self.set(Shape(rate_kbit=mbit * 1000 if mbit else None))

    def counters(self) -> dict[str, int]:
        """Bytes and packets sent and dropped by the node's end since the last set()."""
        if self.emulated:
            return json.loads(self._ask_emulator("stats"))
        out = subprocess.run(
            ["tc", "-s", "qdisc", "show", "dev", self.node_dev],
            capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
        sent = dropped = 0
        for line in out.splitlines():
            words = line.split()
            if words[:1] == ["Sent"]:
                sent = max(sent, int(words[1]))
                dropped = max(dropped, int(words[6].rstrip(",")))
        return {"sent_bytes": sent, "dropped_packets": dropped}

    def move_viewer(self) -> str:
        """The viewer namespace changes address, as a phone going from Wi-Fi to LTE: a new
        address on the link, then the old one removed (its sockets' packets go nowhere).
        Returns the new address."""
        there = ("nsenter", "-t", str(self.pid), "-n")
        prefix, last = self.viewer_addr.rsplit(".", 1)
        new = f"{prefix}.{int(last) + 1}"
        # Keep the new address when the old (primary) one of the subnet goes.
        _run(*there, "sysctl", "-qw", f"net.ipv4.conf.{self.viewer_dev}.promote_secondaries=1")
        _run(*there, "ip", "addr", "add", f"{new}/24", "dev", self.viewer_dev)
        _run(*there, "ip", "addr", "del", f"{self.viewer_addr}/24", "dev", self.viewer_dev)
        _run(*there, "ip", "route", "replace", "default", "dev", self.viewer_dev)
        self.viewer_addr = new
        return new

    def cut_viewer_udp(self) -> list[int]:
        """Every UDP socket open in the viewer namespace now stops getting through (its
        packets in and out are dropped), as when a phone's Wi-Fi goes: sockets opened
        later and TCP still work. Returns the ports cut."""
        there = ("nsenter", "-t", str(self.pid), "-n")
        listed = subprocess.run(
            [*there, "ss", "-Huan"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
        ports = sorted({int(line.split()[3].rsplit(":", 1)[1]) for line in listed.splitlines()})
        if ports:
            listed_ports = ", ".join(map(str, ports))
            rules = f"""
table ip airclass_cut {{
  chain out {{
    type filter hook output priority 0;
    udp sport {{ {listed_ports} }} drop;
  }}
  chain in {{
    type filter hook input priority 0;
    udp dport {{ {listed_ports} }} drop;
  }}
}}
"""
            done = subprocess.run(
                [*there, "nft", "-f", "-"], input=rules, text=True, capture_output=True
            )
            if done.returncode != 0:
                raise RuntimeError(f"nft: {done.stderr.strip()}")
        return ports

    # -- programs in the viewer namespace ------------------------------------------------
    def viewer_command(self, args: list[str]) -> list[str]:
        """`args` run in the viewer namespace (as root, the same files and processes)."""
        return ["nsenter", "-t", str(self.pid), "-n", *args]

    def viewer_popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.viewer_command(args), **kwargs)

    def chromium_executable(self, directory: Path, chromium: str = CHROMIUM) -> str:
        """A wrapper to give Playwright as executable_path: Chromium in the viewer
        namespace (Playwright talks to it over a pipe, so no network is needed for that)."""
        path = directory / f"chromium-in-{self.viewer_dev}.sh"
        path.write_text(
            f'#!/bin/sh\nexec nsenter -t {self.pid} -n {chromium} "$@"\n', encoding="utf-8"
        )
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        self._wrappers.append(path)
        return str(path)

    def close(self) -> None:
        if self._emulator is not None:
            self._emulator.kill()  # its TUN devices go with it
            self._emulator.wait(5)
        subprocess.run(["ip", "link", "del", self.node_dev], capture_output=True, timeout=10)
        if self._placeholder is not None and self._placeholder.poll() is None:
            self._placeholder.kill()
            self._placeholder.wait(5)
        for path in self._wrappers:
            path.unlink(missing_ok=True)

    def __enter__(self) -> ShapedLink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


class LinkNode(NodeProcess):
    """A real node bound to and advertising a shaped link's node address."""

    def __init__(self, link: ShapedLink, tmp_path: Path, *extra: str, **kwargs) -> None:
        super().__init__(tmp_path, *extra, **kwargs)
        self.host = link.node_addr
        for flag in ("--host", "--ice-host"):
            self.args[self.args.index(flag) + 1] = self.host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def rtmp_url(self, stream: str, token: str = "") -> str:
        query = f"?token={token}" if token else ""
        return f"rtmp://{self.host}:{self.rtmp_port}/live/{stream}{query}"
