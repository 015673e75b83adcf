"""TLS built into the node: HTTPS, WSS, WHEP, RTMPS, Chromium over HTTPS, SIGHUP reload,
`airclass cert --self-signed`. Certificates come from a test CA made here; every client
verifies them against it (never "insecure" except Chromium's own context)."""

from __future__ import annotations

import asyncio
import datetime
import http.client
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .classroom_support import WS, Api, add_teacher
from .support import (
    ROOT,
    TEST_HOST,
    NodeProcess,
    async_wait_for,
    ffmpeg_publish,
    free_port,
    wait_for,
)

STREAM = "secure-room"


# -- a test CA -----------------------------------------------------------------------------
def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class TestCA:
    """A certificate authority for one test; issues server certificates for TEST_HOST."""

    __test__ = False  # not a test class

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "AIRClass test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(1)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )  # fmt: skip
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, serial: int, cert_path: Path, key_path: Path) -> None:
        """A server certificate for TEST_HOST (IP SAN) with this serial, written in place."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TEST_HOST)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(TEST_HOST))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_path.write_bytes(_pem_key(key))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.path))


@pytest.fixture
def ca(tmp_path) -> TestCA:
    return TestCA(tmp_path)


# -- a node over TLS -----------------------------------------------------------------------
class TlsNode(NodeProcess):
    """`airclass serve --tls-cert --tls-key --rtmps-port`, reached over HTTPS only."""

    def __init__(self, tmp_path: Path, cert: Path, key: Path, trust: Path, *extra, **kw):
        self.rtmps_port = free_port()
        super().__init__(
            tmp_path,
            "--tls-cert", str(cert), "--tls-key", str(key),
            "--rtmps-port", str(self.rtmps_port),
            *extra,
            **kw,
        )  # fmt: skip
        self.cert_path, self.key_path = cert, key
        #: Client context trusting only `trust` (the test CA, or a self-signed cert).
        self.ssl = ssl.create_default_context(cafile=str(trust))

    @property
    def url(self) -> str:
        return f"https://{TEST_HOST}:{self.http_port}"

    def start(self, timeout: float = 20) -> TlsNode:
        import urllib.request

        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT
        )

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log()}")
            url = self.url + "/api/health"
            with urllib.request.urlopen(url, timeout=1, context=self.ssl) as resp:
                return resp.status == 200

        wait_for(ready, timeout, f"node on {self.url}")
        return self

    def http(self) -> aiohttp.ClientSession:
        """A client session that verifies the node against the trusted certificate."""
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.ssl))

    async def token(self, stream: str, user_type="student", action="read") -> dict:
        query = f"user_type={user_type}&action={action}&stream={stream}"
        async with self.http() as http, http.post(f"{self.url}/api/token?{query}") as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()

    async def stream_status(self, stream: str) -> dict:
        async with self.http() as http, http.get(f"{self.url}/api/streams/{stream}") as resp:
            return await resp.json() if resp.status == 200 else {}


@pytest.fixture
def tls_node(tmp_path, ca):
    """Start TlsNode(s) with a certificate from the test CA (serial 1001 unless given)."""
    nodes: list[TlsNode] = []

    def start(*extra: str, serial: int = 1001, before_start=None, **kw) -> TlsNode:
        cert, key = tmp_path / "server.pem", tmp_path / "server.key"
        ca.issue(serial, cert, key)
        node = TlsNode(tmp_path, cert, key, ca.path, *extra, **kw)
        nodes.append(node)
        if before_start is not None:
            before_start(node)
        return node.start()

    yield start
    for node in nodes:
        node.stop()


def rtmps_publish(node: TlsNode, rtmp_url: str, trust: Path, **kwargs) -> subprocess.Popen:
    """ffmpeg publishing over RTMPS, verifying the node's certificate against `trust`."""
    verify = ["-tls_verify", "1", "-ca_file", str(trust)]
    return ffmpeg_publish(rtmp_url, extra=verify, **kwargs)


async def publish_rtmps(node: TlsNode, ca: TestCA, processes, **kwargs) -> dict:
    grant = await node.token(STREAM, user_type="teacher", action="publish")
    # The token's publishing URL is the RTMPS one, on --rtmps-port.
    assert grant["rtmp_url"].startswith(f"rtmps://{TEST_HOST}:{node.rtmps_port}/live/{STREAM}?")
    assert grant["whip_url"].startswith(f"https://{TEST_HOST}:{node.http_port}/")
    processes.append(rtmps_publish(node, grant["rtmp_url"], ca.path, **kwargs))

    async def live():
        return (await node.stream_status(STREAM)).get("width")

    await async_wait_for(live, 30, f"{STREAM} live over RTMPS")
    return grant


# -- tests ---------------------------------------------------------------------------------
async def test_https_api_wss_whep_and_rtmps(tls_node, ca, processes, players):
    node = await asyncio.to_thread(tls_node, before_start=lambda n: add_teacher(n.data_dir, "kim"))
    async with node.http() as http:
        async with http.get(f"{node.url}/api/health") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
            assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
        # The certificate really is checked: a client trusting only the system CAs refuses it.
        async with aiohttp.ClientSession() as untrusting:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await untrusting.get(f"{node.url}/api/health")
        # Plain HTTP on the HTTPS port gets no answer.
        with pytest.raises(aiohttp.ClientError):
            async with aiohttp.ClientSession() as plain:
                await plain.get(f"http://{TEST_HOST}:{node.http_port}/api/health")

        # The classroom over HTTPS and WSS: a teacher opens a session, a student joins.
        api = Api(http, node.url)
        teacher = await api.login("kim")
        session = await api.ok(
            "POST", "/api/sessions", {"title": "TLS", "stream": "tls-class"}, token=teacher
        )
        joined = await api.join(session["join_code"], "Mina")
        assert joined["whep_url"].startswith(f"https://{TEST_HOST}:{node.http_port}/")
        # node.url is https://, so WS.connect opens wss://.
        student = await WS.connect(http, node.url, session["session_id"], joined["token"])
        teacher_ws = await WS.connect(http, node.url, session["session_id"], teacher)
        await student.send(type="chat", text="hello over wss")
        msg = await teacher_ws.wait("chat")
        assert msg["message"]["text"] == "hello over wss" and msg["message"]["name"] == "Mina"
        await student.close()
        await teacher_ws.close()

        # ffmpeg publishes over RTMPS (verifying the node against the CA) ...
        await publish_rtmps(node, ca, processes, size="640x360")
        # ... and an aiortc viewer plays it over WHEP on HTTPS.
        grant = await node.token(STREAM)
        assert grant["whep_url"] == f"{node.url}/live/{STREAM}/whep"
        player = await players(grant["whep_url"], grant["token"], ssl=node.ssl)
        stats = await player.wait_frames(video=30, audio=20, timeout=40)
        assert (stats.width, stats.height) == (640, 360)


async def test_chromium_plays_student_page_over_https(tls_node, ca, processes, browser):
    if TEST_HOST.startswith("127."):
        pytest.skip("Chromium gathers no loopback ICE candidates: use scripts/run-tests.sh")
    node = await asyncio.to_thread(tls_node)
    await publish_rtmps(node, ca, processes, size="640x360")
    # The test CA is not in Chromium's store: this context skips the check (Playwright).
    context = await browser.new_context(ignore_https_errors=True, locale="en-US")
    try:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        response = await page.goto(f"{node.url}/student?stream={STREAM}")
        assert response.status == 200
        assert "max-age=" in (await response.all_headers())["strict-transport-security"]
        # Functions, not expressions: the page's CSP forbids eval.
        await page.wait_for_function(
            "() => document.getElementById('video').videoWidth === 640", timeout=40_000
        )
        frames = await page.evaluate("() => window.airclassPlayer.framesDecoded()")
        await page.wait_for_function(
            f"() => window.airclassPlayer.framesDecoded() > {frames + 20}", timeout=20_000
        )
        assert await page.evaluate("() => location.protocol") == "https:"
        assert not errors
    finally:
        await context.close()


def served_serial(port: int, trust: ssl.SSLContext) -> int:
    """Serial number of the certificate a new TLS connection to this port is shown."""
    with (
        socket.create_connection((TEST_HOST, port), timeout=5) as raw,
        trust.wrap_socket(raw, server_hostname=TEST_HOST) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_sighup_reloads_the_certificate(tls_node, ca):
    node = tls_node(serial=1001)
    trust = ca.client_context()
    ports = (node.http_port, node.rtmps_port)
    assert [served_serial(port, trust) for port in ports] == [1001, 1001]
    kept = trust.wrap_socket(
        socket.create_connection((TEST_HOST, node.http_port), timeout=5),
        server_hostname=TEST_HOST,
    )
    try:
        # The operator renews the certificate in place (new key too) and sends SIGHUP.
        ca.issue(1002, node.cert_path, node.key_path)
        node.proc.send_signal(signal.SIGHUP)
        for port in ports:
            wait_for(lambda p=port: served_serial(p, trust) == 1002, 10, f"new cert on {port}")
        # A connection made before the reload keeps working with the old certificate.
        assert x509.load_der_x509_certificate(kept.getpeercert(True)).serial_number == 1001
        kept.sendall(f"GET /api/health HTTP/1.1\r\nHost: {TEST_HOST}\r\n\r\n".encode())
        assert kept.recv(64).startswith(b"HTTP/1.1 200")
    finally:
        kept.close()

    # A broken renewal (key not matching) is refused; the node keeps the working one.
    stray_key = node.key_path.with_suffix(".new")
    ca.issue(1003, node.cert_path, stray_key)  # the certificate is new, the key 1002's
    stray_key.unlink()
    node.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "TLS reload refused" in node.log(), 10, "the reload refused")
    assert [served_serial(port, trust) for port in ports] == [1002, 1002]
    assert "PRIVATE KEY" not in node.log()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "airclass_web.cli", *args],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={**os.environ, "AIRCLASS_JWT_SECRET": "x" * 40},
    )  # fmt: skip


def test_self_signed_cert_command_serves_a_node(tmp_path):
    out = tmp_path / "certs"
    result = run_cli("cert", "--self-signed", TEST_HOST, "--out-dir", str(out))
    assert result.returncode == 0, result.stderr
    cert_path, key_path = out / "cert.pem", out / "key.pem"
    assert key_path.stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(TEST_HOST)]
    assert "PRIVATE KEY" not in result.stdout + result.stderr

    # The node serves it; a client trusting exactly this certificate verifies host and chain.
    # With --rtmp-port 0 only RTMPS listens.
    node = TlsNode(tmp_path, cert_path, key_path, cert_path, "--rtmp-port", "0")
    try:
        node.start()
        assert served_serial(node.http_port, node.ssl) == cert.serial_number
        assert served_serial(node.rtmps_port, node.ssl) == cert.serial_number
        assert "RTMPS ingest on" in node.log() and "RTMP ingest on" not in node.log()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((TEST_HOST, node.rtmp_port), timeout=5).close()
    finally:
        node.stop()

    # A DNS name goes into the SAN as one.
    result = run_cli("cert", "--self-signed", "classroom.test", "--out-dir", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    named = x509.load_pem_x509_certificate((tmp_path / "d" / "cert.pem").read_bytes())
    san = named.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["classroom.test"]

    # serve refuses a certificate without its key, and a key of another certificate.
    serve = ("serve", "--host", TEST_HOST, "--http-port", "0", "--data-dir", str(tmp_path / "x"))
    result = run_cli(*serve, "--tls-cert", str(cert_path))
    assert result.returncode == 2 and "--tls-key" in result.stderr
    other_key = tmp_path / "d" / "key.pem"
    result = run_cli(*serve, "--tls-cert", str(cert_path), "--tls-key", str(other_key))
    assert result.returncode == 2 and "cannot load" in result.stderr
    assert "PRIVATE KEY" not in result.stderr


def test_plain_http_redirects_to_https(tls_node):
    """--http-redirect-port: a typed http:// address lands on the HTTPS node."""
    redirect_port = free_port()
    node = tls_node("--http-redirect-port", str(redirect_port))
    conn = http.client.HTTPConnection(TEST_HOST, redirect_port, timeout=5)
    conn.request("GET", "/join?code=ABCD2345")
    resp = conn.getresponse()
    assert resp.status == 308
    assert resp.getheader("Location") == f"https://{TEST_HOST}:{node.http_port}/join?code=ABCD2345"
    conn.close()
    # The HTTPS port itself still answers TLS only.
    with urllib.request.urlopen(node.url + "/api/health", context=node.ssl, timeout=5) as ok:
        assert ok.status == 200
