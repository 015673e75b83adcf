"""Cache of analysis results: an in-memory LRU in front of the store (collection
`ai_cache`, documents with an `expires_at`), keyed by task, prompt version, provider,
model and a hash of the content. A store shared by nodes shares the cache."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict

from ..store import Store, StoreError

log = logging.getLogger(__name__)

#: Seconds a result stays valid, per task.
TTL = {"vision": 24 * 3600.0, "nlp": 3600.0, "feedback": 3600.0}
LRU_SIZE = 512


def content_hash(value) -> str:
    """sha256 of bytes, or of a JSON value in canonical form."""
    if not isinstance(value, bytes):
        value = json.dumps(value, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(value).hexdigest()


def cache_key(task: str, prompt_version: str, provider: str, model: str, digest: str) -> str:
    text = f"{task}|{prompt_version}|{provider}|{model}|{digest}"
    return hashlib.sha256(text.encode()).hexdigest()


class AICache:
    def __init__(self, store: Store, size: int = LRU_SIZE) -> None:
        self.store = store
        self.size = size
        self._lru: OrderedDict[str, tuple[float, dict]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._lru)

    async def get(self, key: str) -> dict | None:
        now = time.time()
        entry = self._lru.get(key)
        if entry is not None:
            if entry[0] > now:
                self._lru.move_to_end(key)
                return entry[1]
            del self._lru[key]
        try:
            doc = await self.store.get("ai_cache", key)
        except StoreError as exc:
            log.warning("ai cache: store read failed: %s", exc)
            doc = None
        if doc is not None and doc.get("expires_at", 0) > now:
            self._remember(key, doc["expires_at"], doc["result"])
            return doc["result"]
        return None

    async def put(self, key: str, task: str, result: dict) -> None:
        expires = time.time() + TTL[task]
        self._remember(key, expires, result)
        doc = {"id": key, "task": task, "expires_at": expires, "result": result}
        try:
            await self.store.upsert("ai_cache", doc)
        except StoreError as exc:
            log.warning("ai cache: store write failed: %s", exc)

    def _remember(self, key: str, expires: float, result: dict) -> None:
        self._lru[key] = (expires, result)
        self._lru.move_to_end(key)
        while len(self._lru) > self.size:
            self._lru.popitem(last=False)
