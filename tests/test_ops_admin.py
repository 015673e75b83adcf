"""/health, /ready and the /admin page with real parts: redis-server, a main and a sub
that lose their dependencies; a full standalone node with a publisher and a viewer, an
admin account made by the CLI, Chromium at 1280 and 390 px in Korean and English."""

from __future__ import annotations

import subprocess
import sys

import aiohttp

from .classroom_support import PASSWORD, Api, add_teacher
from .ops_support import CLUSTER_ENV
from .support import ROOT, async_wait_for, ffmpeg_publish, http_json

STREAM = "opsadmin"


def admin_cli(data_dir, *args: str, password: str = PASSWORD) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "airclass_web.cli", "admin", *args, "--data-dir", str(data_dir)],
        input=password + "\n", capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip


def test_ready_names_what_is_down(node_factory, redis_server):
    common = ("--redis-url", redis_server.url, "--workers", "1")
    main = node_factory("--role", "main", *common, env=CLUSTER_ENV, name="main")
    sub = node_factory(
        "--role", "sub", "--main-url", main.url, *common, env=CLUSTER_ENV, name="sub"
    )  # fmt: skip
    for node in (main, sub):
        status, body, _ = http_json("GET", node.url + "/ready")
        assert status == 200 and body["ready"] and body["checks"]["redis"]["ok"], body
        assert http_json("GET", node.url + "/api/health")[0] == 200  # the old check stays

    redis_server.stop()
    status, body, _ = http_json("GET", main.url + "/ready")
    assert status == 503 and body["down"] == ["redis"], body
    assert http_json("GET", main.url + "/health")[0] == 200  # alive, only not ready

    main.stop()
    status, body, _ = http_json("GET", sub.url + "/ready")
    assert status == 503 and set(body["down"]) == {"redis", "main"}, body
    assert body["checks"]["main"]["detail"].startswith("main unreachable")
    assert http_json("GET", sub.url + "/health")[0] == 200


async def test_admin_page_shows_load_and_advice(node_factory, processes, players, browser):
    node = node_factory("--capacity", "1", "--workers", "1")
    assert add_teacher(node.data_dir, "teach").returncode == 0
    made = admin_cli(node.data_dir, "add", "ops")
    assert made.returncode == 0, made.stderr
    assert admin_cli(node.data_dir, "list").stdout.split() == ["ops"]

    publish = node.token(STREAM, user_type="teacher", action="publish")["token"]
    processes.append(ffmpeg_publish(node.rtmp_url(STREAM, publish), seconds=600, size="320x240"))
    grant = await node.atoken(STREAM, user_id="viewer-1")
    player = await players(grant["whep_url"], grant["token"])
    await player.wait_frames(video=10, timeout=30)

    async with aiohttp.ClientSession() as http:
        api = Api(http, node.url)
        assert (await api.call("GET", "/api/admin/overview", token=""))[0] == 401
        teacher = await api.login("teach")
        assert (await api.call("GET", "/api/admin/overview", token=teacher))[0] == 403
        creds = {"username": "teach", "password": PASSWORD}
        assert (await api.call("POST", "/api/admin/login", creds, token=""))[0] == 401
        creds["username"] = "ops"
        token = (await api.ok("POST", "/api/admin/login", creds, token=""))["token"]

        async def full() -> dict | None:
            body = await api.ok("GET", "/api/admin/overview", token=token)
            return body if body["cluster"]["load"] == 1 else None

        body = await async_wait_for(full, 20, "the viewer in the node's heartbeat")
        assert body["cluster"]["load_percentage"] == 100.0
        assert {a["code"] for a in body["advice"]} >= {"add_sub", "node_full"}
        assert body["streams"][0]["name"] == STREAM and body["streams"][0]["live"]
        assert body["dependencies"]["store"]["ok"] and body["recordings"]["disk_free_bytes"] > 0

        for width, height in ((1280, 800), (390, 844)):
            context = await browser.new_context(
                viewport={"width": width, "height": height}, locale="ko-KR"
            )
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            await page.goto(node.url + "/admin")
            await page.fill("input[name=username]", "ops")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("#a-login-form button")
            await page.wait_for_function(
                "() => document.querySelectorAll('#a-nodes tbody tr').length === 1"
            )
            advice = await page.text_content("#a-advice")
            assert "서브 노드를 추가하세요" in advice, advice
            assert await page.text_content("#a-percent") == "100 %"
            assert "가득 참" in await page.text_content("#a-nodes")
            overflow = await page.evaluate(
                "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            assert overflow[0] <= overflow[1], (width, overflow)
            # Refreshed by itself every few seconds.
            stamp = await page.text_content("#a-updated")
            await page.wait_for_function(
                f"() => document.getElementById('a-updated').textContent !== {stamp!r}",
                timeout=15000,
            )
            await page.click(".lang-toggle")
            assert "add a sub node" in await page.text_content("#a-advice")
            head = await page.text_content("#a-nodes thead")
            assert "Load / capacity" in head and "Heartbeat" in head, head
            overflow = await page.evaluate(
                "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            assert overflow[0] <= overflow[1], (width, overflow)
            assert not errors, errors
            await context.close()

        # Taking the admin right away revokes the token at once.
        assert admin_cli(node.data_dir, "remove", "ops").returncode == 0
        assert (await api.call("GET", "/api/admin/overview", token=token))[0] == 401
