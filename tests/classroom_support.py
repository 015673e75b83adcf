"""Classroom test helpers: teacher accounts through the real CLI, an HTTP client and
WebSocket clients that record every message and wait on conditions."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp

from .support import ROOT

PASSWORD = "correct horse battery"


def add_teacher(data_dir: Path, username: str, password: str = PASSWORD, *extra: str):
    """`airclass teacher add` with the password on stdin (not a TTY)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "airclass_web.cli",
            "teacher",
            "add",
            username,
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


class Api:
    """JSON over HTTP against one node."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str = "") -> None:
        self.http, self.base, self.token = http, base.rstrip("/"), token

    def as_(self, token: str) -> Api:
        return Api(self.http, self.base, token)

    async def call(
        self, method: str, path: str, body=None, token: str | None = None, **kwargs
    ) -> tuple[int, object]:
        headers = dict(kwargs.pop("headers", {}))
        token = self.token if token is None else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        async with self.http.request(
            method, self.base + path, json=body, headers=headers, **kwargs
        ) as resp:
            text = await resp.text()
            try:
                return resp.status, json.loads(text)
            except ValueError:
                return resp.status, text

    async def ok(self, method: str, path: str, body=None, token: str | None = None) -> dict:
        status, data = await self.call(method, path, body, token)
        assert status in (200, 201), (method, path, status, data)
        return data

    async def login(self, username: str, password: str = PASSWORD) -> str:
        data = await self.ok(
            "POST", "/api/auth/login", {"username": username, "password": password}, token=""
        )
        return data["token"]

    async def join(self, code: str, name: str) -> dict:
        return await self.ok(
            "POST", "/api/sessions/join", {"join_code": code, "name": name}, token=""
        )


class WS:
    """A WebSocket client that keeps every message it receives."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, label: str = "") -> None:
        self.ws = ws
        self.label = label
        self.messages: list[dict] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls, http: aiohttp.ClientSession, base: str, session_id: str, token: str, label: str = ""
    ) -> WS:
        url = f"{base.replace('http', 'ws', 1)}/ws/session/{session_id}?token={token}"
        ws = await http.ws_connect(url, heartbeat=None, max_msg_size=4 * 1024 * 1024)
        client = cls(ws, label)
        await client.wait("welcome")
        return client

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.messages.append(json.loads(msg.data))
                self._changed.set()
        self._changed.set()

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send(self, **message) -> None:
        await self.ws.send_str(json.dumps(message))

    def of(self, type_: str, pred=None) -> list[dict]:
        return [m for m in self.messages if m.get("type") == type_ and (pred is None or pred(m))]

    async def wait(self, type_: str, pred=None, timeout: float = 10.0, count: int = 1) -> dict:
        """The last of the first `count` messages of this type matching pred."""

        async def until():
            while True:
                found = self.of(type_, pred)
                if len(found) >= count:
                    return found[count - 1]
                if self.ws.closed and self._reader.done():
                    raise ConnectionError(f"{self.label}: closed waiting for {type_}")
                self._changed.clear()
                await self._changed.wait()

        try:
            return await asyncio.wait_for(until(), timeout)
        except TimeoutError:
            seen = [m.get("type") for m in self.messages[-10:]]
            raise TimeoutError(
                f"{self.label}: no {type_} within {timeout}s (last: {seen})"
            ) from None

    async def request(self, timeout: float = 10.0, **message) -> dict:
        """Send with a fresh ref; the reply (or error) carrying it."""
        ref = f"r{id(message)}-{len(self.messages)}-{asyncio.get_running_loop().time()}"
        await self.send(ref=ref, **message)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for m in self.messages:
                if m.get("ref") == ref:
                    return m
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"{self.label}: no reply to {message.get('type')}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                pass

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
