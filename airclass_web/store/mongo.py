"""MongoDB backend through PyMongo's async API (AsyncMongoClient)."""

from __future__ import annotations

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError

from .base import SCHEMA, Doc, DuplicateError, Store, StoreError, check_query


def _clean(doc: dict | None) -> Doc | None:
    if doc is None:
        return None
    doc.pop("_id", None)
    return doc


def _filter(where: dict | None) -> dict:
    return {("_id" if k == "id" else k): v for k, v in (where or {}).items()}


class MongoStore(Store):
    kind = "mongo"

    def __init__(self, url: str, database: str | None = None) -> None:
        self.url = url
        self._database = database
        self._client: AsyncMongoClient | None = None
        self._db = None

    async def open(self) -> None:
        if self._client is not None:
            return
        # Writes are acknowledged by the majority and journaled before insert() returns.
        self._client = AsyncMongoClient(
            self.url, serverSelectionTimeoutMS=5000, w="majority", journal=True, tz_aware=True
        )
        self._db = self._client.get_default_database(default=self._database or "airclass")
        try:
            for coll in SCHEMA.values():
                c = self._db[coll.name]
                for keys in coll.unique:
                    await c.create_index([(k, ASCENDING) for k in keys], unique=True)
                for keys in coll.indexes:
                    await c.create_index([(k, ASCENDING) for k in keys])
        except PyMongoError as exc:
            await self.close()
            raise StoreError(f"MongoDB at {self.url}: {exc}") from exc

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
            self._db = None

    def _coll(self, collection: str):
        if self._db is None:
            raise StoreError("store is not open")
        return self._db[collection]

    async def insert(self, collection: str, doc: Doc) -> Doc:
        check_query(collection, None, None)
        if not doc.get("id"):
            raise ValueError("a document needs an id")
        try:
            await self._coll(collection).insert_one({**doc, "_id": doc["id"]})
        except DuplicateKeyError as exc:
            raise DuplicateError(f"{collection}: {exc}") from exc
        except PyMongoError as exc:
            raise StoreError(str(exc)) from exc
        return dict(doc)

    async def upsert(self, collection: str, doc: Doc) -> Doc:
        check_query(collection, None, None)
        if not doc.get("id"):
            raise ValueError("a document needs an id")
        try:
            await self._coll(collection).replace_one(
                {"_id": doc["id"]}, {**doc, "_id": doc["id"]}, upsert=True
            )
        except DuplicateKeyError as exc:
            raise DuplicateError(f"{collection}: {exc}") from exc
        except PyMongoError as exc:
            raise StoreError(str(exc)) from exc
        return dict(doc)

    async def get(self, collection: str, doc_id: str) -> Doc | None:
        check_query(collection, None, None)
        return _clean(await self._coll(collection).find_one({"_id": doc_id}))

    async def find(
        self,
        collection: str,
        where: dict | None = None,
        *,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
    ) -> list[Doc]:
        check_query(collection, where, order_by)
        cursor = self._coll(collection).find(_filter(where))
        if order_by:
            key = "_id" if order_by == "id" else order_by
            cursor = cursor.sort([(key, DESCENDING if descending else ASCENDING)])
        if limit is not None:
            cursor = cursor.limit(int(limit))
        return [_clean(d) for d in await cursor.to_list()]

    async def find_one(self, collection: str, where: dict) -> Doc | None:
        check_query(collection, where, None)
        return _clean(await self._coll(collection).find_one(_filter(where)))

    async def count(self, collection: str, where: dict | None = None) -> int:
        check_query(collection, where, None)
        return await self._coll(collection).count_documents(_filter(where))

    async def update(self, collection: str, doc_id: str, fields: dict) -> Doc | None:
        from pymongo import ReturnDocument

        check_query(collection, None, None)
        fields = {k: v for k, v in fields.items() if k not in ("id", "_id")}
        try:
            doc = await self._coll(collection).find_one_and_update(
                {"_id": doc_id}, {"$set": fields}, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError as exc:
            raise DuplicateError(f"{collection}: {exc}") from exc
        return _clean(doc)

    async def delete(self, collection: str, doc_id: str) -> bool:
        check_query(collection, None, None)
        result = await self._coll(collection).delete_one({"_id": doc_id})
        return result.deleted_count > 0
