"""The teacher's dashboard on a real node: a class with students (WebSocket presence,
chat, a quiz), a recording of a published slide (ffmpeg) linked to the session and read
by Tesseract for the slide timeline; the API (overview, students, alerts, slides,
export.csv, sessions) and Chromium at laptop and phone widths without horizontal
overflow, in Korean and English."""

from __future__ import annotations

import csv
import io
import shutil

import aiohttp
import pytest

from .ai_support import render_slide
from .classroom_support import WS, Api, add_teacher
from .support import NodeProcess, async_wait_for, stop_process

SHOTS = 2  # --screenshot-interval


def publish_image(png, rtmp_url: str, seconds: int = 90):
    """ffmpeg publishing a still slide (H.264, 1 s GOP) + a tone over RTMP, in real time."""
    import subprocess

    exe = shutil.which("ffmpeg")
    if exe is None:
        pytest.skip("ffmpeg not installed")
    args = [
        exe,
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-re",
        "-loop",
        "1",
        "-framerate",
        "15",
        "-t",
        str(seconds),
        "-i",
        str(png),
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:sample_rate=44100:duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "15",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-f",
        "flv",
        rtmp_url,
    ]
    return subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


@pytest.fixture
def dash_node(tmp_path):
    node = NodeProcess(tmp_path, "--screenshot-interval", str(SHOTS), dev=False, name="dash")
    for user in ("kim", "lee"):
        assert add_teacher(node.data_dir, user).returncode == 0
    node.start()
    yield node
    node.stop()


async def build_class(api: Api, node: NodeProcess, tmp_path, processes):
    """A session with 3 students, chat, a closed quiz and a recording of one slide."""
    token = await api.login("kim")
    sess = await api.ok(
        "POST", "/api/sessions", {"title": "광합성 Biology", "stream": "bio"}, token=token
    )
    sid = sess["session_id"]
    png = tmp_path / "slide.png"
    png.write_bytes(render_slide("광합성 Photosynthesis", ["Chlorophyll absorbs light"], "PNG"))
    pub = await api.ok(
        "POST", "/api/token?user_type=teacher&action=publish&stream=bio", token=token
    )
    processes.append(publish_image(png, pub["rtmp_url"]))

    async def live():
        status, body = await api.call("GET", "/api/streams/bio", token=token)
        return status == 200 and body.get("live")

    await async_wait_for(live, 30, "stream bio live")
    rec = await api.ok(
        "POST", "/api/recording/start", {"stream": "bio", "session_id": sid}, token=token
    )
    rid = rec.get("id") or rec.get("recording_id") or rec["recording"]["id"]

    names = ["김민지", "Tom Baker", "이서준"]
    students = [await api.join(sess["join_code"], n) for n in names]
    sockets = [
        await WS.connect(api.http, node.url, sid, s["token"], n)
        for s, n in zip(students, names, strict=True)
    ]
    for text, who in (
        ("광합성은 어디서 일어나나요?", 0),
        ("이해가 안 돼요", 0),
        ("헷갈려요 ㅠㅠ", 2),
        ("I don't understand chlorophyll", 1),
        ("Great slide!", 1),
    ):
        await api.ok(
            "POST", f"/api/sessions/{sid}/chat", {"text": text}, token=students[who]["token"]
        )
    await api.ok("POST", f"/api/sessions/{sid}/chat", {"text": "좋은 질문이에요"}, token=token)
    quiz = await api.ok(
        "POST",
        "/api/quiz/create",
        {
            "session_id": sid,
            "question": "2+2?",
            "kind": "choice",
            "options": ["3", "4"],
            "correct": 1,
        },
        token=token,
    )
    await api.ok("POST", "/api/quiz/publish", {"quiz_id": quiz["quiz_id"]}, token=token)
    for s, answer in zip(students[:2], (1, 0), strict=True):
        await api.ok(
            "POST",
            "/api/quiz/response",
            {"quiz_id": quiz["quiz_id"], "answer": answer},
            token=s["token"],
        )
    await api.ok("POST", "/api/quiz/close", {"quiz_id": quiz["quiz_id"]}, token=token)

    async def shots():
        doc = await api.ok("GET", f"/api/recording/{rid}", token=token)
        return len(doc["screenshots"]) >= 1

    await async_wait_for(shots, 40, "a screenshot of the recording")
    return token, sid, rid, students, sockets, names


async def test_dashboard_api_and_browser(dash_node, tmp_path, processes, browser):
    async with aiohttp.ClientSession() as http:
        api = Api(http, dash_node.url)
        token, sid, rid, students, sockets, names = await build_class(
            api, dash_node, tmp_path, processes
        )
        base = f"/api/dashboard/session/{sid}"

        async def three_online():
            o = await api.ok("GET", base + "/overview", token=token)
            return o if o["cards"]["present"] == 3 else None

        overview = await async_wait_for(three_online, 15, "3 students present")
        cards = overview["cards"]
        assert cards["students"] == 3 and cards["messages_per_minute"] > 0
        assert cards["open_questions"] == 0  # the teacher answered in chat
        assert cards["confusion_index"] == 60  # 3 of 5 student messages
        assert overview["quizzes"][0]["accuracy"] == 50.0
        assert overview["quizzes"][0]["difficulty"] == 50
        (rec,) = overview["recordings"]
        assert rec["id"] == rid and rec["page_url"].startswith(f"/vod/{rid}?exp=")
        assert overview["trend"] and sum(b["confusion"] for b in overview["trend"]) == 3

        body = await api.ok("GET", base + "/students", token=token)
        rows = {r["name"]: r for r in body["students"]}
        assert set(rows) == set(names) and "2.5" in body["formula"]
        assert rows["김민지"]["messages"] == 2 and rows["김민지"]["questions"] == 1
        assert rows["김민지"]["quiz_accuracy"] == 100 and rows["Tom Baker"]["quiz_accuracy"] == 0
        assert rows["이서준"]["quiz_answers"] == 0 and rows["이서준"]["online"] is True
        assert max(r["activity_score"] for r in rows.values()) <= 10
        assert rows["김민지"]["activity_score"] > rows["이서준"]["activity_score"]

        alerts = (await api.ok("GET", base + "/alerts", token=token))["alerts"]
        assert {a["name"] for a in alerts} >= {"김민지", "이서준"}

        slides = (await api.ok("GET", base + "/slides", token=token))["slides"]
        assert len(slides) == 1, slides  # a still slide: one slide however many shots
        assert "Photosynthesis" in slides[0]["title"] and slides[0]["source"] == "local"
        assert slides[0]["thumbnail"].startswith(f"/vod/{rid}/shots/")
        async with http.get(dash_node.url + slides[0]["thumbnail"]) as resp:
            assert resp.status == 200 and resp.content_type == "image/jpeg"

        status, text = await api.call("GET", base + "/export.csv", token=token)
        assert status == 200
        table = list(csv.reader(io.StringIO(text)))
        assert table[0][:3] == ["student_id", "name", "joined_at"] and len(table) == 4
        assert {r[1] for r in table[1:]} == set(names)

        lee = await api.login("lee")
        assert (await api.call("GET", base + "/overview", token=lee))[0] == 403
        assert (await api.call("GET", base + "/students", token=students[0]["token"]))[0] == 403
        assert (await api.call("GET", base + "/export.csv", token=""))[0] == 401
        listed = (await api.ok("GET", "/api/dashboard/sessions", token=token))["sessions"]
        assert listed[0]["id"] == sid and listed[0]["students"] == 3
        assert listed[0]["recordings"] == 1

        # The browser: laptop and phone; Korean then English.
        shots_dir = tmp_path / "screens"
        shots_dir.mkdir()
        for width, height in ((1280, 800), (390, 844)):
            page = await browser.new_page(viewport={"width": width, "height": height})
            errors: list[str] = []
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            # Script errors and failed requests (the favicon aside) fail the test.
            page.on(
                "response",
                lambda r, errors=errors: (
                    r.status >= 400
                    and not r.url.endswith("/favicon.ico")
                    and errors.append(f"{r.status} {r.url}")
                ),
            )
            await page.add_init_script(
                f"sessionStorage.setItem('airclass.teacher_token', {token!r});"
                "localStorage.setItem('airclass.lang', 'ko');"
            )
            await page.goto(dash_node.url + f"/dashboard/{sid}")
            await page.wait_for_function(
                "() => document.querySelectorAll('#d-students tbody tr').length === 3",
                timeout=20000,
            )
            await page.wait_for_function(
                "() => document.querySelectorAll('#d-slides img').length === 1", timeout=30000
            )
            await page.wait_for_function(
                "() => document.getElementById('d-report-summary').textContent.length > 0",
                timeout=30000,
            )
            assert await page.evaluate("!!Chart.getChart('d-trend') && !!Chart.getChart('d-quiz')")
            assert await page.text_content("#d-formula") and "활동 점수" in (
                await page.text_content("#d-formula")
            )
            assert await page.text_content("#c-present") == "3 / 3"
            # No English in the Korean report: the summary is composed in the page's language.
            summary = await page.text_content("#d-report-summary")
            assert summary.startswith("학생 3명") and "students" not in summary, summary
            await page.wait_for_function(
                "() => document.getElementById('d-live').textContent === '실시간'"
            )
            overflow = await page.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            assert overflow[0] <= overflow[1], (width, overflow)
            await page.screenshot(path=str(shots_dir / f"dash-{width}.png"), full_page=True)
            await page.click(".lang-toggle")
            assert "Activity" in await page.text_content("#d-formula")

            assert await page.text_content("h2 >> nth=0") == "Engagement over time"
            # Live: a new chat message reaches the cards over the WebSocket.
            await api.ok(
                "POST",
                f"/api/sessions/{sid}/chat",
                {"text": f"why {width}?"},
                token=students[1]["token"],
            )
            await page.wait_for_function(
                "() => document.getElementById('c-open').textContent !== '0'", timeout=15000
            )
            assert not errors, errors
            await page.close()

        page = await browser.new_page(viewport={"width": 390, "height": 844})
        await page.add_init_script(f"sessionStorage.setItem('airclass.teacher_token', {token!r});")
        await page.goto(dash_node.url + "/dashboard")
        await page.wait_for_function(
            "() => document.querySelectorAll('#d-sessions tbody tr').length === 1"
        )
        assert await page.evaluate(
            "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )
        await page.screenshot(path=str(shots_dir / "list-390.png"), full_page=True)
        await page.close()
        print("screenshots in", shots_dir)
        for s in sockets:
            await s.close()
        await api.ok("POST", "/api/recording/stop", {"recording_id": rid}, token=token)
    for p in processes:
        stop_process(p)
