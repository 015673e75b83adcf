"""Persistent store: `open_store(config)` picks MongoDB (mongo_url) or SQLite (data_dir)."""

from __future__ import annotations

from ..config import Config
from .base import SCHEMA, Doc, DuplicateError, Store, StoreError

SQLITE_FILE = "airclass.sqlite3"


def make_store(config: Config) -> Store:
    """The configured backend, not yet opened."""
    if config.mongo_url:
        from .mongo import MongoStore

        return MongoStore(config.mongo_url)
    from ..datadir import secure_data_dir
    from .sqlite import SQLiteStore

    secure_data_dir(config.data_dir)  # 0700, and what an older version left readable
    return SQLiteStore(config.data_dir / SQLITE_FILE)


async def open_store(config: Config) -> Store:
    """The configured backend, opened (collections and indexes created)."""
    store = make_store(config)
    await store.open()
    return store


__all__ = ["SCHEMA", "Doc", "DuplicateError", "Store", "StoreError", "make_store", "open_store"]
