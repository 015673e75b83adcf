"""Open viewer sessions are asked the media access rule again while they last.

A WHEP session is allowed once, at its offer (`http.authorize`). The stream may turn
private afterwards, or the teacher whose token opened it may change his password: every
RECHECK_SECONDS each session's grant goes through `StreamAccess.decide` again, and a session
refused (401/403) is ended, as if its viewer had sent DELETE. A store or main node that
cannot answer (503) ends nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .access import AccessDenied, Grant
from .node import Node
from .store import StoreError

log = logging.getLogger(__name__)

#: Seconds between two checks of every session (the access caches keep answers 2 s).
RECHECK_SECONDS = 3.0
#: On a sub without a shared store each check may ask the main node: less often there.
RECHECK_SECONDS_DELEGATED = 30.0

Close = Callable[[str, str], Awaitable[bool]]


class ViewerGrants:
    """The grant of every open viewer session of this node."""

    def __init__(self, node: Node, close: Close) -> None:
        self.node = node
        self._close = close
        self._grants: dict[str, Grant] = {}
        #: Sessions ended because their viewer may no longer watch (since start).
        self.revoked = 0

    def add(self, session_id: str, grant: Grant) -> None:
        self._grants[session_id] = grant

    def discard(self, session_id: str) -> None:
        self._grants.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._grants)

    async def run(self) -> None:
        access = self.node.access
        delegated = access is not None and access.main_for(self.node.config) is not None
        interval = RECHECK_SECONDS_DELEGATED if delegated else RECHECK_SECONDS
        while True:
            await asyncio.sleep(interval)
            try:
                await self.recheck()
            except Exception:  # a bug here must not stop the next rounds
                log.exception("re-checking viewer sessions failed")

    async def recheck(self) -> None:
        """End every session whose grant the access rule now refuses."""
        for session_id, grant in list(self._grants.items()):
            try:
                await self.node.access.decide(self.node.config, grant, "watch")
            except AccessDenied as exc:
                if exc.status not in (401, 403):
                    continue
                log.info(
                    "viewer %s (%s) on %s ended: %s",
                    session_id,
                    grant.claims.user_id,
                    grant.stream,
                    exc.message,
                )
                self.discard(session_id)
                self.revoked += 1
                await self._close(session_id, grant.stream)
            except StoreError:
                continue
