"""Encryption of data at rest (teachers' AI keys) with its own key, AIRCLASS_DATA_KEY.

One or more Fernet keys, comma-separated: the first encrypts, every one decrypts
(MultiFernet), so a key is rotated by putting the new one first. The key is never derived
from the JWT secret. Under --dev only, a key file in the data directory is created and used
when AIRCLASS_DATA_KEY is not set.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, MultiFernet

log = logging.getLogger(__name__)

DEV_KEY_FILE = "data.key"


class DataKeyError(Exception):
    """AIRCLASS_DATA_KEY is missing or not a list of Fernet keys."""


def data_cipher(keys: str) -> MultiFernet:
    """A MultiFernet of the comma-separated Fernet keys (the first encrypts)."""
    parts = [k.strip() for k in keys.split(",") if k.strip()]
    if not parts:
        raise DataKeyError("AIRCLASS_DATA_KEY is empty")
    try:
        return MultiFernet([Fernet(k.encode()) for k in parts])
    except (ValueError, TypeError) as exc:
        raise DataKeyError(
            "AIRCLASS_DATA_KEY must be Fernet keys, comma-separated (make one with "
            "`python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'`)"
        ) from exc


def dev_data_keys(data_dir: Path) -> str:
    """The --dev key file's key, created on first use (mode 0600)."""
    path = Path(data_dir) / DEV_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_text().strip()  # another process made it just now
        with os.fdopen(fd, "wb") as f:
            f.write(Fernet.generate_key())
        log.warning("--dev: created data key file %s (set AIRCLASS_DATA_KEY in production)", path)
    return path.read_text().strip()
