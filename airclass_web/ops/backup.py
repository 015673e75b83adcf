"""`airclass backup` and `airclass restore`.

A backup is a tar.gz holding `manifest.json` (format, time, store kind, document counts,
the SHA-256 and size of every other member), `config.json` (the AIRCLASS_* settings
without secrets), the store (`store/airclass.sqlite3`, an SQLite online-backup copy taken
while the node runs; or `store/mongo/<collection>.jsonl` read through PyMongo) and, with
--with-recordings, `recordings/`. Restore checks every member against the manifest
before it touches anything, and refuses a damaged archive.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import sqlite3
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from ..store import SCHEMA, SQLITE_FILE

FORMAT = "airclass-backup"
VERSION = 1
MANIFEST = "manifest.json"
#: AIRCLASS_* variables never written to a backup.
SECRET_VARIABLES = {
    "AIRCLASS_JWT_SECRET",
    "AIRCLASS_CLUSTER_SECRET",
    "AIRCLASS_DATA_KEY",
    "AIRCLASS_METRICS_TOKEN",
    "AIRCLASS_TEACHER_PASSWORD",
    "AIRCLASS_REDIS_PASSWORD",
    "AIRCLASS_MONGO_PASSWORD",
}
CHUNK = 1024 * 1024


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
    """The AIRCLASS_* settings of this environment, secrets left out, URL passwords hidden."""
    from ..redis_client import redact_url

    out = {}
    for key, value in sorted((environ if environ is not None else os.environ).items()):
        if not key.startswith("AIRCLASS_") or key in SECRET_VARIABLES:
            continue
        if any(word in key for word in ("SECRET", "PASSWORD", "TOKEN", "KEY")):
            continue
        out[key] = redact_url(value) if "://" in value else value
    return out


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


def make_backup(
    data_dir: Path,
    out: Path,
    *,
    mongo_url: str = "",
    with_recordings: bool = False,
    environ: dict[str, str] | None = None,
) -> dict:
    """Write the archive (atomically: a temporary file renamed at the end); its manifest."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=1) as tar:
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
            writer.add_bytes(MANIFEST, json.dumps(manifest, indent=1).encode())
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
    try:
        with tarfile.open(archive, "r:*") as tar:
            member = tar.getmember(MANIFEST)
            f = tar.extractfile(member)
            manifest = json.loads(f.read()) if f is not None else None
    except (OSError, tarfile.TarError, KeyError, ValueError, EOFError) as exc:
        raise BackupError(f"{archive}: not a readable AIRClass backup ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{archive}: not an AIRClass backup")
    if manifest.get("version") != VERSION:
        raise BackupError(f"{archive}: backup version {manifest.get('version')} not supported")
    return manifest


def _safe_name(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts


def verify(archive: Path) -> dict:
    """The manifest when every member is listed, present, safe and has its checksum."""
    manifest = read_manifest(archive)
    expected: dict[str, dict] = manifest.get("files") or {}
    seen: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.name == MANIFEST:
                    continue
                if not member.isfile() or not _safe_name(member.name):
                    raise BackupError(f"unexpected member {member.name!r}")
                want = expected.get(member.name)
                if want is None or member.name in seen:
                    raise BackupError(f"member {member.name!r} is not in the manifest")
                sha = hashlib.sha256()
                f = tar.extractfile(member)
                while chunk := f.read(CHUNK):
                    sha.update(chunk)
                if sha.hexdigest() != want["sha256"] or member.size != want["size"]:
                    raise BackupError(f"{member.name}: checksum mismatch")
                seen.add(member.name)
    except (OSError, tarfile.TarError, EOFError, ValueError) as exc:
        raise BackupError(f"archive damaged: {exc}") from exc
    missing = set(expected) - seen
    if missing:
        raise BackupError(f"archive damaged: {len(missing)} files missing, e.g. {min(missing)}")
    return manifest


def _extract(tar: tarfile.TarFile, name: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(name)
    with open(dest, "wb") as out:
        shutil.copyfileobj(src, out, CHUNK)


def restore_backup(archive: Path, data_dir: Path, *, mongo_url: str = "") -> dict:
    """Replace the store (and recordings, when the backup has them) with the archive's."""
    manifest = verify(archive)
    data_dir.mkdir(parents=True, exist_ok=True)
    if manifest["store"] == "mongo" and not mongo_url:
        raise BackupError("this backup is of a MongoDB store: give --mongo-url")
    with tarfile.open(archive, "r:*") as tar:
        if manifest["store"] == "sqlite":
            tmp = data_dir / f".{SQLITE_FILE}.restore"
            _extract(tar, f"store/{SQLITE_FILE}", tmp)
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
            staging.mkdir()
            for name in manifest["files"]:
                if name.startswith("recordings/"):
                    _extract(tar, name, staging / name.removeprefix("recordings/"))
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
