"""TLS built into a node: HTTPS/WSS on the HTTP port and RTMPS on its own port.

One server `ssl.SSLContext` is shared by the HTTP site and the RTMPS listener. SIGHUP
reloads the certificate files into that same context (`TlsContext.reload`): connections
made afterwards get the new certificate, open ones keep theirs. The files are first
loaded into a throwaway context, so a half-written or mismatched pair is refused and the
node goes on with the certificate it had.

`airclass cert --self-signed HOST` writes a self-signed certificate for development.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import logging
import os
import ssl
import sys
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)


class TlsError(Exception):
    """The certificate or key cannot be used."""


def _load(context: ssl.SSLContext, cert: str, key: str) -> None:
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        # Never the key's contents: only the file names and OpenSSL's reason.
        raise TlsError(f"cannot load --tls-cert {cert} / --tls-key {key}: {exc}") from None


def _new_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def check_files(cert: str, key: str) -> None:
    """Raise TlsError unless cert and key load (and match)."""
    _load(_new_context(), cert, key)


class TlsContext:
    """The node's server SSLContext and the files it was loaded from."""

    def __init__(self, cert: str, key: str) -> None:
        self.cert, self.key = cert, key
        self.context = _new_context()
        _load(self.context, cert, key)

    def reload(self) -> bool:
        """Load the files again into the same context (SIGHUP); False if they are unusable."""
        try:
            check_files(self.cert, self.key)
            _load(self.context, self.cert, self.key)
        except TlsError as exc:
            log.error("TLS reload refused, keeping the current certificate: %s", exc)
            return False
        log.info("TLS certificate reloaded from %s", self.cert)
        return True


# -- `airclass cert --self-signed HOST` --------------------------------------------------
def self_signed(host: str, days: int = 365) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) of a self-signed EC P-256 server certificate
    whose subject alternative name is host (an IP address or a DNS name)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def write_key(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only (mode 0600 from the start)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def cert_command(args: argparse.Namespace) -> int:
    if not args.self_signed:
        print("airclass: cert needs --self-signed HOST", file=sys.stderr)
        return 2
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = self_signed(args.self_signed, args.days)
    cert_path, key_path = out / "cert.pem", out / "key.pem"
    cert_path.write_bytes(cert_pem)
    write_key(key_path, key_pem)
    print(f"wrote {cert_path} and {key_path} (self-signed for {args.self_signed}, "
          f"{args.days} days; for development only)")  # fmt: skip
    print(f"airclass serve --tls-cert {cert_path} --tls-key {key_path}")
    return 0


def add_cert_command(commands) -> None:
    cert = commands.add_parser(
        "cert",
        help="make a self-signed TLS certificate for development",
        description="Write cert.pem and key.pem (mode 0600) for `airclass serve --tls-cert "
        "--tls-key`. Browsers warn about a self-signed certificate: use a real one (or a "
        "reverse proxy such as Caddy) in production.",
    )
    cert.add_argument(
        "--self-signed",
        metavar="HOST",
        required=True,
        help="IP address or DNS name clients use for the node (the certificate's SAN)",
    )
    cert.add_argument("--out-dir", default=".", help="where to write (default: .)")
    cert.add_argument("--days", type=int, default=365, help="validity (default: 365)")
    cert.set_defaults(handler=cert_command)


def https_redirect_app(https_port: int) -> web.Application:
    """A plain-HTTP app that sends every request to the same path over HTTPS (308 keeps
    the method and body), so a typed http:// address still reaches the node."""

    async def redirect(request: web.Request) -> web.Response:
        host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
        port = "" if https_port == 443 else f":{https_port}"
        raise web.HTTPPermanentRedirect(f"https://{host}{port}{request.path_qs}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    return app
