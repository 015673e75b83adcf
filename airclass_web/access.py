"""Who may do what with a stream: ownership, public viewing, revoked teacher tokens.

A stream belongs to the teacher who first claims it (creates a class session on it, gets a
publish token for it, publishes it, or claims it explicitly). The owner alone may publish,
record, stop, share and delete its recordings, and mark it public. Anyone may watch a
public stream; everyone else watches through a class session's join token. Under --dev
every stream is public. Ownership lives in the store (shared by a cluster's nodes); nodes
cache what they read for a moment.

Every media route (WHEP, WHIP, HLS playlists, segments and parts, the viewer listing) asks
`authorize` at each request: the token's stream claim AND the stream's rule as it is now,
so a teacher's sign-in token (valid for "*") opens only his own or public streams, and a
token taken while a stream was public stops working once it is private.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

import aiohttp

from .auth import Claims
from .config import Config
from .errors import ApiError
from .store import Store

log = logging.getLogger(__name__)

#: Stream documents and teachers' revocation times are re-read after this many seconds.
CACHE_SECONDS = 2.0
_MISSING: dict = {}


class AccessDenied(ApiError):
    """The caller may not do this (HTTP `status`: 401 revoked token, 403 not yours)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)


class StreamAccess:
    def __init__(self, store: Store, dev: bool) -> None:
        """store: the node's Store (opened before the node serves requests)."""
        self.store = store
        self.dev = dev
        self._streams: dict[str, tuple[float, dict]] = {}
        self._valid_after: dict[str, tuple[float, float]] = {}
        self._main: MainAccess | None = None

    def main_for(self, config: Config) -> MainAccess | None:
        """A sub node without a shared store (MongoDB) knows no stream owner nor public
        flag: its main node decides (`MainAccess`). None where this node decides."""
        if self.dev or config.role != "sub" or config.mongo_url or not config.main_url:
            return None
        if self._main is None:
            self._main = MainAccess(config.main_url)
        return self._main

    async def decide(self, config: Config, grant: Grant, need: Need = "watch") -> None:
        """The one access rule of every media request, for a verified token: AccessDenied
        (401 revoked, 403 not allowed now, 503 store or main unreachable) or StoreError."""
        main = self.main_for(config) if need != "publish" else None
        if main is not None:
            await main.check(grant.stream, need, grant.token)
        elif need == "watch":
            await self.check_watch(grant.stream, grant.claims)
        elif need == "publish":
            await self.check_publish(grant.stream, grant.claims)
        else:
            await self.check_manage(grant.stream, grant.claims)

    # -- streams ---------------------------------------------------------------------
    async def stream(self, name: str, *, fresh: bool = False) -> dict | None:
        """The stream's document ({id, owner, public, claimed_at}) or None if unclaimed."""
        cached = self._streams.get(name)
        if cached and not fresh and time.monotonic() - cached[0] < CACHE_SECONDS:
            return cached[1] or None
        doc = await self.store.get_stream(name)
        self._remember(name, doc)
        return doc

    def _remember(self, name: str, doc: dict | None) -> None:
        if len(self._streams) > 10_000:
            self._streams.clear()
        self._streams[name] = (time.monotonic(), doc or _MISSING)

    async def owner(self, name: str) -> str | None:
        doc = await self.stream(name)
        return doc["owner"] if doc else None

    async def claim(self, name: str, teacher: str) -> dict:
        """Make `teacher` the owner of an unclaimed stream; AccessDenied 403 when another
        teacher owns it. Returns the stream's document."""
        doc = await self.stream(name)
        if doc is None:
            doc = await self.store.claim_stream(name, teacher, time.time())
            self._remember(name, doc)
            if doc["owner"] == teacher:
                log.info("stream %s now belongs to %s", name, teacher)
        if doc["owner"] != teacher:
            raise AccessDenied(403, f"stream {name} belongs to another teacher")
        return doc

    async def require_owner(self, name: str, teacher: str) -> None:
        """AccessDenied 403 unless `teacher` owns the stream (or nobody does yet)."""
        owner = await self.owner(name)
        if owner is not None and owner != teacher:
            raise AccessDenied(403, f"stream {name} belongs to another teacher")

    async def set_public(self, name: str, teacher: str, public: bool) -> dict:
        await self.claim(name, teacher)
        doc = await self.store.set_stream_public(name, public)
        self._remember(name, doc)
        log.info("stream %s marked %s by %s", name, "public" if public else "private", teacher)
        return doc

    async def is_public(self, name: str) -> bool:
        if self.dev:
            return True
        doc = await self.stream(name)
        return bool(doc and doc.get("public"))

    async def may_view(self, name: str, claims: Claims | None) -> bool:
        """May a caller with these claims (None: anonymous) get a read token / see it?"""
        if await self.is_public(name):
            return True
        if claims is None:
            return False
        if claims.role == "teacher":  # teacher tokens come only from verified credentials
            return await self.owner(name) in (None, claims.user_id)
        return (
            claims.role in ("student", "monitor")
            and claims.session_id != ""
            and (claims.stream == name)
        )

    async def visible(self, names: list[str], claims: Claims | None) -> set[str]:
        """The names among these a caller may see listed."""
        return {n for n in names if await self.may_view(n, claims)}

    # -- teacher tokens ----------------------------------------------------------------
    async def check_teacher_token(self, claims: Claims) -> None:
        """AccessDenied 401 when the teacher's password changed after this token."""
        if claims.role != "teacher":
            return
        cached = self._valid_after.get(claims.user_id)
        if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
            valid_after = cached[1]
        else:
            teacher = await self.store.get_teacher(claims.user_id)
            valid_after = float(teacher.get("tokens_valid_after") or 0) if teacher else 0.0
            if len(self._valid_after) > 10_000:
                self._valid_after.clear()
            self._valid_after[claims.user_id] = (time.monotonic(), valid_after)
        # Tokens carry milliseconds: compare at that precision.
        if claims.issued_at < math.floor(valid_after * 1000) / 1000:
            raise AccessDenied(401, "token revoked (the password changed); sign in again")

    # -- media routes ------------------------------------------------------------------
    async def check_watch(self, name: str, claims: Claims) -> None:
        """AccessDenied unless these claims may watch the stream now (WHEP, HLS): the
        token names it (or "*"), is not revoked, and the stream's rule (public, its
        owner, a member of its class) allows it at this moment."""
        if not claims.allows_stream(name):
            raise AccessDenied(403, f"token is not valid for stream {name}")
        await self.check_teacher_token(claims)
        if not await self.may_view(name, claims):
            raise AccessDenied(
                403,
                f"stream {name} is private: join its class session, or its teacher marks it public",
            )

    async def check_publish(self, name: str, claims: Claims) -> None:
        """AccessDenied unless these claims may publish the stream (claims it if free)."""
        if claims.role != "teacher" or claims.action not in ("publish", "admin"):
            raise AccessDenied(403, "only a teacher's publish token may publish")
        if not claims.allows_stream(name):
            raise AccessDenied(403, f"token is not valid for stream {name}")
        await self.check_teacher_token(claims)
        await self.claim(name, claims.user_id)

    async def check_manage(self, name: str, claims: Claims) -> None:
        """AccessDenied unless these claims are the stream's owner's (or an admin's):
        who may see its viewers."""
        if claims.role == "admin":  # still an admin, password unchanged since the token
            account = await self.store.get_teacher(claims.user_id)
            valid_after = float((account or {}).get("tokens_valid_after") or 0)
            if (
                not (account or {}).get("admin")
                or claims.issued_at < math.floor(valid_after * 1000) / 1000
            ):
                raise AccessDenied(401, "admin token revoked; sign in again")
            return
        if claims.role != "teacher" or claims.action not in ("publish", "admin"):
            raise AccessDenied(403, "only the stream's teacher may do this")
        if not claims.allows_stream(name):
            raise AccessDenied(403, f"token is not valid for stream {name}")
        await self.check_teacher_token(claims)
        await self.require_owner(name, claims.user_id)


class MainAccess:
    """Access decisions asked of the main node (GET /api/streams/NAME/access with the
    caller's token), each answer kept for CACHE_SECONDS: a sub without a shared store."""

    TIMEOUT = aiohttp.ClientTimeout(total=5)

    def __init__(self, main_url: str) -> None:
        self.main_url = main_url.rstrip("/")
        self._answers: dict[tuple[str, str, str], tuple[float, int, str]] = {}

    async def check(self, name: str, need: str, token: str) -> None:
        """AccessDenied as the main answered (401/403), 503 when it cannot answer."""
        key = (need, name, hashlib.sha256(token.encode()).hexdigest())
        cached = self._answers.get(key)
        if cached and time.monotonic() - cached[0] < CACHE_SECONDS:
            status, message = cached[1], cached[2]
        else:
            status, message = await self._ask(name, need, token)
            if len(self._answers) > 10_000:
                self._answers.clear()
            self._answers[key] = (time.monotonic(), status, message)
        if status != 204:
            raise AccessDenied(status, message)

    async def _ask(self, name: str, need: str, token: str) -> tuple[int, str]:
        url = f"{self.main_url}/api/streams/{name}/access"
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with (
                aiohttp.ClientSession(timeout=self.TIMEOUT) as http,
                http.get(url, params={"need": need}, headers=headers) as resp,
            ):
                if resp.status == 204:
                    return 204, ""
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise AccessDenied(503, f"main node not reachable ({type(exc).__name__})") from exc
        if resp.status in (401, 403):
            error = body.get("error", "refused") if isinstance(body, dict) else "refused"
            return resp.status, f"main node: {error}"
        raise AccessDenied(503, f"main node answered {resp.status}")


Need = Literal["watch", "publish", "manage"]
#: Roles whose tokens each kind of media request takes.
NEED_ROLES: dict[str, tuple[str, ...]] = {
    "watch": ("student", "teacher", "monitor"),
    "publish": ("teacher",),
    "manage": ("teacher", "admin"),
}


@dataclass(frozen=True, slots=True)
class Grant:
    """What a media request was allowed with: asked again while its session lasts."""

    stream: str
    claims: Claims
    token: str
