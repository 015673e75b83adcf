"""The data directory is private: directory 0700, files 0600.

Every AIRClass process that writes there (`airclass serve`, backup, restore, the account
commands) sets the umask 077 first (`private_umask`), so whatever it creates later (the
SQLite store and its -wal/-shm, recordings, screenshots, worker sockets, backups) is
readable by its owner only. `secure_data_dir` also tightens what an older version left
world-readable: the directory itself, the store files, the recordings and run directories.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

#: New files 0600, new directories 0700.
PRIVATE_UMASK = 0o077
#: Names in the data directory tightened at start (files 0600, directories 0700).
STORE_FILES = ("airclass.sqlite3", "airclass.sqlite3-wal", "airclass.sqlite3-shm")
PRIVATE_DIRS = ("recordings", "run")


def private_umask() -> None:
    """Files this process creates from now on are its user's only."""
    os.umask(PRIVATE_UMASK)


def chmod_if_exists(path: Path, mode: int) -> None:
    """chmod a file or directory that exists (not through a symlink); a file owned by
    another user is left as it is, with a warning."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_symlink():
            return
        try:
            path.chmod(mode)
        except PermissionError:
            log.warning("cannot make %s mode %o: owned by another user", path, mode)


def secure_data_dir(data_dir: Path) -> Path:
    """Create the data directory (0700) or tighten an existing one and what it holds."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    chmod_if_exists(data_dir, 0o700)
    for name in STORE_FILES:
        chmod_if_exists(data_dir / name, 0o600)
    for name in PRIVATE_DIRS:
        chmod_if_exists(data_dir / name, 0o700)
    return data_dir
