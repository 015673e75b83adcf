"""SQLite backend: one file in the data directory, one writer thread, nothing to install.

Each collection is a table with the indexed fields as columns plus the whole document as
JSON. All statements run on a single thread (the connection's), so the event loop never
blocks and writes are serialised. WAL mode with synchronous=NORMAL: a committed write
survives a crash or kill of the process (not a power loss of the machine). Several
processes on one machine may share the file (busy timeout), e.g. the nodes of a test
cluster; a real cluster uses MongoDB. A new directory is made 0700; the database and its
-wal and -shm files are 0600 (they hold password hashes; see `datadir`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..datadir import chmod_if_exists
from .base import SCHEMA, Doc, DuplicateError, Store, StoreError, check_query


class SQLiteStore(Store):
    kind = "sqlite"

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def _run(self, fn, *args):
        if self._executor is None:
            raise StoreError("store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # -- life cycle -------------------------------------------------------------------
    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.path.exists():
            # Created 0600 before SQLite opens it; its -wal and -shm take its mode.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=15000")
        conn.execute("PRAGMA journal_mode=WAL")
        for suffix in ("", "-wal", "-shm"):
            chmod_if_exists(Path(f"{self.path}{suffix}"), 0o600)
        conn.execute("PRAGMA synchronous=NORMAL")
        for coll in SCHEMA.values():
            cols = ", ".join(f'"{f}"' for f in coll.fields)
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {coll.name} "
                f"(id TEXT PRIMARY KEY, {cols}, doc TEXT NOT NULL)"
            )
            for unique, keys in [(True, k) for k in coll.unique] + [
                (False, k) for k in coll.indexes
            ]:
                name = f"{'ux' if unique else 'ix'}_{coll.name}_{'_'.join(keys)}"
                conn.execute(
                    f"CREATE {'UNIQUE ' if unique else ''}INDEX IF NOT EXISTS {name} "
                    f"ON {coll.name} ({', '.join(keys)})"
                )
        self._conn = conn

    async def close(self) -> None:
        if self._executor is None:
            return
        await self._run(self._close_sync)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- helpers ----------------------------------------------------------------------
    @staticmethod
    def _where(where: dict | None) -> tuple[str, list]:
        if not where:
            return "", []
        parts, values = [], []
        for key, value in where.items():
            if value is None:
                parts.append(f'"{key}" IS NULL')
            else:
                parts.append(f'"{key}" = ?')
                values.append(value)
        return " WHERE " + " AND ".join(parts), values

    @staticmethod
    def _row(collection: str, doc: Doc) -> list:
        coll = SCHEMA[collection]
        return [
            str(doc["id"]),
            *(doc.get(f) for f in coll.fields),
            json.dumps(doc, ensure_ascii=False),
        ]

    def _write(self, collection: str, doc: Doc, verb: str) -> Doc:
        if not doc.get("id"):
            raise ValueError("a document needs an id")
        coll = check_query(collection, None, None)
        cols = ", ".join(["id", *(f'"{f}"' for f in coll.fields), "doc"])
        marks = ", ".join("?" * (len(coll.fields) + 2))
        try:
            self._conn.execute(
                f"{verb} INTO {collection} ({cols}) VALUES ({marks})",
                self._row(collection, doc),
            )
        except sqlite3.IntegrityError as exc:
            raise DuplicateError(f"{collection}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(str(exc)) from exc
        return doc

    # -- primitives -------------------------------------------------------------------
    async def insert(self, collection: str, doc: Doc) -> Doc:
        return await self._run(self._write, collection, dict(doc), "INSERT")

    async def upsert(self, collection: str, doc: Doc) -> Doc:
        return await self._run(self._write, collection, dict(doc), "INSERT OR REPLACE")

    async def get(self, collection: str, doc_id: str) -> Doc | None:
        found = await self.find(collection, {"id": doc_id}, limit=1)
        return found[0] if found else None

    def _find(self, collection, where, order_by, descending, limit) -> list[Doc]:
        check_query(collection, where, order_by)
        clause, values = self._where(where)
        sql = f"SELECT doc FROM {collection}{clause}"
        if order_by:
            sql += f' ORDER BY "{order_by}" {"DESC" if descending else "ASC"}, rowid'
        if limit is not None:
            sql += " LIMIT ?"
            values.append(int(limit))
        rows = self._conn.execute(sql, values).fetchall()
        return [json.loads(r[0]) for r in rows]

    async def find(
        self,
        collection: str,
        where: dict | None = None,
        *,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Doc]:
        return await self._run(self._find, collection, where, order_by, descending, limit)

    async def find_one(self, collection: str, where: dict) -> Doc | None:
        found = await self.find(collection, where, limit=1)
        return found[0] if found else None

    def _count(self, collection: str, where: dict | None) -> int:
        check_query(collection, where, None)
        clause, values = self._where(where)
        return self._conn.execute(f"SELECT COUNT(*) FROM {collection}{clause}", values).fetchone()[
            0
        ]

    async def count(self, collection: str, where: dict | None = None) -> int:
        return await self._run(self._count, collection, where)

    def _update(self, collection: str, doc_id: str, fields: dict) -> Doc | None:
        check_query(collection, None, None)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(f"SELECT doc FROM {collection} WHERE id = ?", (doc_id,)).fetchone()
            if row is None:
                conn.execute("ROLLBACK")
                return None
            doc = {**json.loads(row[0]), **fields, "id": doc_id}
            coll = SCHEMA[collection]
            sets = ", ".join([*(f'"{f}" = ?' for f in coll.fields), "doc = ?"])
            conn.execute(
                f"UPDATE {collection} SET {sets} WHERE id = ?",
                [*self._row(collection, doc)[1:], doc_id],
            )
            conn.execute("COMMIT")
            return doc
        except sqlite3.IntegrityError as exc:
            conn.execute("ROLLBACK")
            raise DuplicateError(f"{collection}: {exc}") from exc
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def update(self, collection: str, doc_id: str, fields: dict) -> Doc | None:
        return await self._run(self._update, collection, doc_id, dict(fields))

    def _delete(self, collection: str, doc_id: str) -> bool:
        check_query(collection, None, None)
        return self._conn.execute(f"DELETE FROM {collection} WHERE id = ?", (doc_id,)).rowcount > 0

    async def delete(self, collection: str, doc_id: str) -> bool:
        return await self._run(self._delete, collection, doc_id)
