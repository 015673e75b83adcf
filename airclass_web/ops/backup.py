"""`airclass backup` and `airclass restore`.

A backup is a tar.gz holding `manifest.json` (format, time, store kind, document counts,
the SHA-256 and size of every other member), `manifest.sig` (an HMAC-SHA256 of the
manifest's bytes, see `backup_keys`), `config.json` (an allowlist of AIRCLASS_* settings:
no secrets, passwords nor URLs that may carry them), the store (`store/airclass.sqlite3`,
an SQLite online-backup copy taken while the node runs; or `store/mongo/<collection>.jsonl`
read through PyMongo) and, with --with-recordings, `recordings/`. Restore refuses an
archive whose manifest is not signed with one of the operator's keys, any member that is
not a regular file at an expected, clean path (links, devices, `..`, empty or absolute
components), and any member whose checksum differs; it checks all of that before it
touches anything, and writes only below the data directory. Archives are mode 0600.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import json
import os
import re
import shutil
import sqlite3
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..store import SCHEMA, SQLITE_FILE

FORMAT = "airclass-backup"
#: 2: the manifest is authenticated (manifest.sig); version 1 archives are refused.
VERSION = 2
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
#: Where the key that signs manifests comes from, in this order: an explicit backup key,
#: else the data key (each of its comma-separated keys verifies; the first signs), else
#: the JWT secret. Restore needs the same variable set as when the backup was made.
KEY_VARIABLES = ("AIRCLASS_BACKUP_KEY", "AIRCLASS_DATA_KEY", "AIRCLASS_JWT_SECRET")
KEY_LABEL = b"airclass backup manifest v1"
#: The only AIRCLASS_* settings copied into config.json: none is a secret, a password, or
#: a URL that may carry credentials (Redis, MongoDB, alert webhook, ICE/TURN servers).
CONFIG_ALLOWLIST = frozenset(
    {
        "AIRCLASS_HOST",
        "AIRCLASS_HTTP_PORT",
        "AIRCLASS_RTMP_PORT",
        "AIRCLASS_RTMPS_PORT",
        "AIRCLASS_HTTP_REDIRECT_PORT",
        "AIRCLASS_TLS_CERT",
        "AIRCLASS_TLS_KEY",
        "AIRCLASS_ROLE",
        "AIRCLASS_PUBLIC_URL",
        "AIRCLASS_DATA_DIR",
        "AIRCLASS_DEV",
        "AIRCLASS_DEMO",
        "AIRCLASS_WORKERS",
        "AIRCLASS_CAPACITY",
        "AIRCLASS_UDP_PORTS",
        "AIRCLASS_ICE_HOST",
        "AIRCLASS_ICE_PUBLIC_IP",
        "AIRCLASS_TRUSTED_PROXY",
        "AIRCLASS_IP_RATE_LIMIT",
        "AIRCLASS_MAX_VIEWERS_PER_USER",
        "AIRCLASS_MAX_VIEWERS_PER_IP",
        "AIRCLASS_MAX_PENDING_PER_IP",
        "AIRCLASS_RTMP_MAX_CONNECTIONS",
        "AIRCLASS_RTMP_MAX_PER_IP",
        "AIRCLASS_LOG_LEVEL",
        "AIRCLASS_RECORD_SEGMENT_SECONDS",
        "AIRCLASS_SCREENSHOT_INTERVAL",
        "AIRCLASS_RETENTION_DAYS",
        "AIRCLASS_MIN_FREE_DISK_MB",
        "AIRCLASS_AUTO_RECORD",
        "AIRCLASS_RECORD_OFFLINE_GRACE",
        "AIRCLASS_HLS_PART_SECONDS",
        "AIRCLASS_LADDER",
        "AIRCLASS_LADDER_GRACE",
        "AIRCLASS_TURN_TTL",
        "AIRCLASS_AI_CALLS_PER_MINUTE",
        "AIRCLASS_WHIP_KEYFRAME_INTERVAL",
    }
)
CHUNK = 1024 * 1024
#: manifest.json and manifest.sig are read into memory: at most this many bytes.
MAX_MANIFEST = 64 * 1024 * 1024
#: A path component inside an archive: no control characters, slashes or backslashes.
_PART = re.compile(r"[^\x00-\x1f\x7f/\\]+")


class BackupError(Exception):
    """The backup or restore cannot be done (message for the operator)."""


# -- helpers -------------------------------------------------------------------------------
class _HashingReader:
    """Reads at most `size` bytes of a file, hashing what it reads (for tarfile.addfile)."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.left, self.sha = f, size, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        self.sha.update(data)
        return data


def safe_config(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The allowlisted AIRCLASS_* settings of this environment (CONFIG_ALLOWLIST)."""
    env = environ if environ is not None else os.environ
    return {key: env[key] for key in sorted(CONFIG_ALLOWLIST) if key in env}


def backup_keys(environ: dict[str, str] | None = None) -> list[tuple[str, bytes]]:
    """(variable, HMAC key) for every key the operator holds, the signing one first."""
    env = environ if environ is not None else os.environ
    keys = []
    for var in KEY_VARIABLES:
        raw = env.get(var, "")
        values = raw.split(",") if var == "AIRCLASS_DATA_KEY" else [raw]
        for value in (v.strip() for v in values):
            if not value:
                continue
            if var == "AIRCLASS_BACKUP_KEY" and len(value) < 32:
                raise BackupError("AIRCLASS_BACKUP_KEY must be at least 32 characters")
            keys.append((var, hmac.new(value.encode(), KEY_LABEL, hashlib.sha256).digest()))
    return keys


def _no_key_error() -> BackupError:
    return BackupError(
        "no key to sign or check the manifest: set AIRCLASS_BACKUP_KEY (32+ characters), "
        "or the node's AIRCLASS_DATA_KEY or AIRCLASS_JWT_SECRET"
    )


def sign_manifest(data: bytes, environ: dict[str, str] | None = None) -> bytes:
    """manifest.sig for these manifest bytes."""
    keys = backup_keys(environ)
    if not keys:
        raise _no_key_error()
    var, key = keys[0]
    mac = hmac.new(key, data, hashlib.sha256).hexdigest()
    return json.dumps({"alg": "HMAC-SHA256", "key": var, "mac": mac}).encode()


def check_signature(data: bytes, sig: bytes | None, environ: dict[str, str] | None = None):
    """Raise BackupError unless `sig` is a valid manifest.sig of `data` under a held key."""
    if sig is None:
        raise BackupError("the manifest is not signed (an altered or foreign archive)")
    try:
        mac = json.loads(sig)["mac"]
        given = bytes.fromhex(mac)
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError("the manifest signature is malformed") from exc
    keys = backup_keys(environ)
    if not keys:
        raise _no_key_error()
    for _, key in keys:
        if hmac.compare_digest(hmac.new(key, data, hashlib.sha256).digest(), given):
            return
    raise BackupError(
        "the manifest signature does not match: the archive was altered, or it was made "
        f"with another key (keys tried: {', '.join(sorted({v for v, _ in keys}))})"
    )


def _redact(url: str) -> str:
    from ..redis_client import redact_url

    return redact_url(url)


class _Writer:
    """Adds members to the archive and records their checksums."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.files: dict[str, dict] = {}

    def add_bytes(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
        self.tar.addfile(info, io.BytesIO(data))
        self.files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}

    def add_file(self, name: str, path: Path) -> None:
        """The file as it is now: a file still growing is copied up to its size at start."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = size, int(path.stat().st_mtime), 0o600
            reader = _HashingReader(f, size)
            self.tar.addfile(info, reader)
        self.files[name] = {"sha256": reader.sha.hexdigest(), "size": size}


# -- backup --------------------------------------------------------------------------------
def _sqlite_snapshot(db: Path, dest: Path) -> dict[str, int]:
    """An online backup of the live database; document counts per collection."""
    if not db.exists():
        raise BackupError(f"no store at {db} (is --data-dir right?)")
    src = sqlite3.connect(db, timeout=30)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
            counts = {}
            for name in SCHEMA:
                try:
                    counts[name] = out.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0]
                except sqlite3.OperationalError:
                    counts[name] = 0
        finally:
            out.close()
    finally:
        src.close()
    return counts


def _mongo_database(url: str):
    from pymongo import MongoClient

    client = MongoClient(url, serverSelectionTimeoutMS=5000, tz_aware=True)
    return client, client.get_default_database(default="airclass")


def _mongo_dump(url: str, writer: _Writer) -> dict[str, int]:
    from bson import json_util

    client, db = _mongo_database(url)
    counts = {}
    try:
        with client.start_session(snapshot=False) as session:
            for name in SCHEMA:
                lines = [
                    json_util.dumps(doc, json_options=json_util.CANONICAL_JSON_OPTIONS)
                    for doc in db[name].find({}, session=session).sort("_id", 1)
                ]
                counts[name] = len(lines)
                writer.add_bytes(f"store/mongo/{name}.jsonl", ("\n".join(lines) + "\n").encode())
    finally:
        client.close()
    return counts


def _recording_files(root: Path) -> Iterator[tuple[str, Path]]:
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield "recordings/" + path.relative_to(root).as_posix(), path


def _private_file(path: Path) -> BinaryIO:
    """A new file that only its owner may read (mode 0600 from the start)."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def make_backup(
    data_dir: Path,
    out: Path,
    *,
    mongo_url: str = "",
    with_recordings: bool = False,
    environ: dict[str, str] | None = None,
) -> dict:
    """Write the archive (atomically: a temporary file renamed at the end, mode 0600);
    its manifest. Refused when no key to sign the manifest is set."""
    sign_manifest(b"", environ)  # no key: fail before the work
    if not out.parent.exists():
        out.parent.mkdir(mode=0o700, parents=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        with (
            _private_file(tmp) as raw,
            tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1) as tar,
        ):
            writer = _Writer(tar)
            writer.add_bytes("config.json", json.dumps(safe_config(environ), indent=1).encode())
            if mongo_url:
                kind = "mongo"
                counts = _mongo_dump(mongo_url, writer)
            else:
                kind = "sqlite"
                with tempfile.TemporaryDirectory(dir=out.parent) as work:
                    snap = Path(work) / SQLITE_FILE
                    counts = _sqlite_snapshot(data_dir / SQLITE_FILE, snap)
                    writer.add_file(f"store/{SQLITE_FILE}", snap)
            if with_recordings:
                for name, path in _recording_files(data_dir / "recordings"):
                    writer.add_file(name, path)
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "created_at": time.time(),
                "store": kind,
                "mongo_url": _redact(mongo_url) if mongo_url else "",
                "counts": counts,
                "with_recordings": with_recordings,
                "files": writer.files,
            }
            data = json.dumps(manifest, indent=1).encode()
            writer.add_bytes(MANIFEST, data)
            writer.add_bytes(SIGNATURE, sign_manifest(data, environ))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return manifest


def prune(directory: Path, keep_days: float, keep: Path) -> list[Path]:
    """Delete AIRClass backups in directory older than keep_days (never `keep`)."""
    cutoff = time.time() - keep_days * 86400
    removed = []
    for path in directory.glob("*.tar.gz"):
        if path.resolve() == keep.resolve() or path.stat().st_mtime >= cutoff:
            continue
        try:
            read_manifest(path)
        except BackupError:
            continue  # not one of ours: leave it
        path.unlink()
        removed.append(path)
    return removed


# -- restore -------------------------------------------------------------------------------
def read_manifest(archive: Path) -> dict:
    """The manifest as written, NOT authenticated (for pruning; restore uses verify)."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            member = tar.getmember(MANIFEST)
            f = tar.extractfile(member)
            manifest = json.loads(f.read(MAX_MANIFEST)) if f is not None else None
    except (OSError, tarfile.TarError, KeyError, ValueError, EOFError) as exc:
        raise BackupError(f"{archive}: not a readable AIRClass backup ({exc})") from exc
    return _check_manifest(archive, manifest)


def _check_manifest(archive: Path, manifest) -> dict:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{archive}: not an AIRClass backup")
    if manifest.get("version") != VERSION:
        raise BackupError(
            f"{archive}: backup version {manifest.get('version')} not supported (version "
            f"{VERSION} archives have a signed manifest; make a new backup)"
        )
    files = manifest.get("files")
    if manifest.get("store") not in ("sqlite", "mongo") or not isinstance(files, dict):
        raise BackupError(f"{archive}: malformed manifest")
    for name, want in files.items():
        if not (
            isinstance(want, dict)
            and isinstance(want.get("sha256"), str)
            and isinstance(want.get("size"), int)
            and _expected_name(name)
        ):
            raise BackupError(f"{archive}: malformed manifest entry {name!r}")
    return manifest


def _clean_path(name: str) -> bool:
    """A relative POSIX path of plain components: none empty, `.`, `..`, or with a
    control character or backslash (so `recordings//tmp/x` is refused)."""
    parts = name.split("/")
    return all(_PART.fullmatch(p) and p not in (".", "..") for p in parts)


def _expected_name(name: str) -> bool:
    """A clean path where a backup puts files: config, the store, recordings/..."""
    if not isinstance(name, str) or not _clean_path(name):
        return False
    if name in ("config.json", f"store/{SQLITE_FILE}"):
        return True
    if name.startswith("store/mongo/") and name.endswith(".jsonl"):
        return name.removeprefix("store/mongo/").removesuffix(".jsonl") in SCHEMA
    return name.startswith("recordings/") and len(name) > len("recordings/")


def _check_member(member: tarfile.TarInfo) -> None:
    """Refuse links, devices, directories, and any name that is not a clean expected path
    (also what tarfile's own "data" extraction filter refuses)."""
    name = member.name
    if not member.isreg():
        raise BackupError(f"member {name!r} is not a regular file (links and devices refused)")
    if name not in (MANIFEST, SIGNATURE) and not _expected_name(name):
        raise BackupError(f"unexpected member {name!r}")
    try:
        tarfile.data_filter(member, "/restore")
    except tarfile.FilterError as exc:
        raise BackupError(f"unsafe member {name!r}: {exc}") from exc


def verify(archive: Path, environ: dict[str, str] | None = None) -> dict:
    """The manifest when it is signed with one of the operator's keys and every member is
    a regular file at a clean expected path, listed once, present, with its checksum."""
    digests: dict[str, tuple[str, int]] = {}
    meta: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                _check_member(member)
                if member.name in digests or member.name in meta:
                    raise BackupError(f"member {member.name!r} appears twice")
                f = tar.extractfile(member)
                if member.name in (MANIFEST, SIGNATURE):
                    if member.size > MAX_MANIFEST:
                        raise BackupError(f"{member.name} too large")
                    meta[member.name] = f.read()
                    continue
                sha = hashlib.sha256()
                while chunk := f.read(CHUNK):
                    sha.update(chunk)
                digests[member.name] = (sha.hexdigest(), member.size)
    except (OSError, tarfile.TarError, EOFError, ValueError) as exc:
        raise BackupError(f"archive damaged: {exc}") from exc
    if MANIFEST not in meta:
        raise BackupError(f"{archive}: not an AIRClass backup (no {MANIFEST})")
    check_signature(meta[MANIFEST], meta.get(SIGNATURE), environ)
    try:
        manifest = _check_manifest(archive, json.loads(meta[MANIFEST]))
    except ValueError as exc:
        raise BackupError(f"{archive}: malformed manifest ({exc})") from exc
    expected: dict[str, dict] = manifest["files"]
    for name, (sha, size) in digests.items():
        want = expected.get(name)
        if want is None:
            raise BackupError(f"member {name!r} is not in the manifest")
        if sha != want["sha256"] or size != want["size"]:
            raise BackupError(f"{name}: checksum mismatch")
    missing = set(expected) - set(digests)
    if missing:
        raise BackupError(f"archive damaged: {len(missing)} files missing, e.g. {min(missing)}")
    return manifest


def _inside(root: Path, relative: str) -> Path:
    """root/relative, refused unless it resolves below root (after any symlinks)."""
    if not _clean_path(relative):
        raise BackupError(f"refusing to write {relative!r}: not a clean relative path")
    base = root.resolve()
    dest = (base / PurePosixPath(relative)).resolve()
    if not dest.is_relative_to(base) or dest == base:
        raise BackupError(f"refusing to write {relative!r}: outside {root}")
    return dest


def _extract(tar: tarfile.TarFile, name: str, root: Path, relative: str, want: dict) -> None:
    """The member `name` as a new private file root/relative (never through a link),
    checked again against its manifest entry while it is written (the archive may have
    changed since `verify`)."""
    dest = _inside(root, relative)
    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _inside(root, relative)  # the directories made on the way are ours, re-check anyway
    member = tar.getmember(name)
    _check_member(member)
    src = tar.extractfile(member)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    sha = hashlib.sha256()
    with os.fdopen(os.open(dest, flags, 0o600), "wb") as out:
        while chunk := src.read(CHUNK):
            sha.update(chunk)
            out.write(chunk)
    if sha.hexdigest() != want["sha256"] or member.size != want["size"]:
        dest.unlink()
        raise BackupError(f"{name}: changed since it was checked")


def restore_backup(
    archive: Path,
    data_dir: Path,
    *,
    mongo_url: str = "",
    environ: dict[str, str] | None = None,
) -> dict:
    """Replace the store (and recordings, when the backup has them) with the archive's."""
    manifest = verify(archive, environ)
    if manifest["store"] == "mongo" and not mongo_url:
        raise BackupError("this backup is of a MongoDB store: give --mongo-url")
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tarfile.open(archive, "r:*") as tar:
        if manifest["store"] == "sqlite":
            tmp_name = f".{SQLITE_FILE}.restore"
            (data_dir / tmp_name).unlink(missing_ok=True)
            name = f"store/{SQLITE_FILE}"
            _extract(tar, name, data_dir, tmp_name, manifest["files"][name])
            tmp = data_dir / tmp_name
            conn = sqlite3.connect(tmp)
            try:
                if conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                    raise BackupError("the store in the archive fails its integrity check")
            finally:
                conn.close()
            for suffix in ("-wal", "-shm"):
                (data_dir / (SQLITE_FILE + suffix)).unlink(missing_ok=True)
            os.replace(tmp, data_dir / SQLITE_FILE)
        else:
            _mongo_load(tar, mongo_url)
        if manifest.get("with_recordings"):
            root = data_dir / "recordings"
            staging = data_dir / ".recordings.restore"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(mode=0o700)
            for name in manifest["files"]:
                if name.startswith("recordings/"):
                    relative = name.removeprefix("recordings/")
                    _extract(tar, name, staging, relative, manifest["files"][name])
            old = data_dir / ".recordings.old"
            shutil.rmtree(old, ignore_errors=True)
            if root.exists():
                root.rename(old)
            staging.rename(root)
            shutil.rmtree(old, ignore_errors=True)
    return manifest


def _mongo_load(tar: tarfile.TarFile, url: str) -> None:
    from bson import json_util

    client, db = _mongo_database(url)
    try:
        for name in SCHEMA:
            raw = tar.extractfile(f"store/mongo/{name}.jsonl").read().decode()
            docs = [json_util.loads(line) for line in raw.splitlines() if line.strip()]
            db[name].delete_many({})
            if docs:
                db[name].insert_many(docs, ordered=True)
    finally:
        client.close()


# -- command line --------------------------------------------------------------------------
def backup_command(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        manifest = make_backup(
            Path(args.data_dir),
            out,
            mongo_url=args.mongo_url,
            with_recordings=args.with_recordings,
        )
    except (BackupError, OSError, sqlite3.Error) as exc:
        print(f"airclass: backup failed: {exc}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{k} {v}" for k, v in manifest["counts"].items() if v)
    print(f"backup {out}: {manifest['store']} store ({counts}), {len(manifest['files'])} files")
    if args.keep_days:
        for path in prune(out.parent, args.keep_days, out):
            print(f"removed old backup {path}")
    return 0


def restore_command(args: argparse.Namespace, ask: Callable[[str], str] = input) -> int:
    archive, data_dir = Path(args.file), Path(args.data_dir)
    try:
        manifest = verify(archive)
    except BackupError as exc:
        print(f"airclass: refusing to restore: {exc}", file=sys.stderr)
        return 1
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(manifest["created_at"]))
    target = _redact(args.mongo_url) if manifest["store"] == "mongo" else str(data_dir)
    print(
        f"Backup of {when}: {manifest['store']} store, "
        f"{'with' if manifest.get('with_recordings') else 'without'} recordings. "
        f"Restoring REPLACES the store at {target}"
        + (" and the recordings" if manifest.get("with_recordings") else "")
        + ". Stop the node first."
    )
    if not args.yes:
        try:
            answer = ask("Type 'yes' to restore: ")
        except EOFError:
            answer = ""
        if answer.strip().lower() != "yes":
            print("airclass: restore cancelled", file=sys.stderr)
            return 1
    try:
        restore_backup(archive, data_dir, mongo_url=args.mongo_url)
    except (BackupError, OSError, sqlite3.Error) as exc:
        print(f"airclass: restore failed: {exc}", file=sys.stderr)
        return 1
    print(f"restored {archive} into {target}")
    return 0


def add_backup_commands(commands, add_store_options: Callable) -> None:
    backup = commands.add_parser(
        "backup",
        help="back up the store (and recordings) while the node runs",
        description="A consistent snapshot of the store while the node runs (SQLite online "
        "backup, or MongoDB collections), the AIRCLASS_* settings without secrets, and a "
        "manifest with checksums, in one tar.gz.",
    )
    add_store_options(backup)
    backup.add_argument("--out", required=True, metavar="FILE", help="archive to write")
    backup.add_argument(
        "--with-recordings", action="store_true", help="include the recordings directory"
    )
    backup.add_argument(
        "--keep-days", type=float, default=0, metavar="DAYS",
        help="then delete AIRClass backups older than DAYS next to FILE (0: keep all)",
    )  # fmt: skip
    backup.set_defaults(handler=backup_command)
    restore = commands.add_parser(
        "restore",
        help="restore a backup (stop the node first)",
        description="Check the archive against its manifest (a damaged archive is refused), "
        "then replace the store, and the recordings when the backup has them.",
    )
    restore.add_argument("file", help="archive written by `airclass backup`")
    add_store_options(restore)
    restore.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    restore.set_defaults(handler=restore_command)
