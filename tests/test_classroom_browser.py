"""Headless Chromium: a student joins by code, a quiz pops up, the answer shows on the
teacher's page; chat both ways."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from .classroom_support import PASSWORD, add_teacher
from .support import NodeProcess


@pytest.fixture
def browser_node(tmp_path):
    node = NodeProcess(tmp_path, dev=False, name="browser")
    assert add_teacher(node.data_dir, "kim").returncode == 0
    node.start()
    yield node
    node.stop()


async def test_student_joins_answers_quiz_teacher_sees_it(browser_node, browser, tmp_path):
    teacher_ctx = await browser.new_context(locale="en-US")
    student_ctx = await browser.new_context(locale="en-US")
    teacher = await teacher_ctx.new_page()
    student = await student_ctx.new_page()
    errors: list[str] = []
    for page in (teacher, student):
        page.on("pageerror", lambda exc: errors.append(str(exc)))
    base = browser_node.url

    # Teacher signs in and opens a session.
    await teacher.goto(base + "/teacher")
    await teacher.wait_for_url("**/login**")
    await teacher.fill("#login-username", "kim")
    await teacher.fill("#login-password", "wrong password")
    await teacher.click("#login-submit")
    await expect(teacher.locator("#login-error")).to_contain_text("Wrong")
    await teacher.fill("#login-password", PASSWORD)
    await teacher.click("#login-submit")
    await teacher.wait_for_url("**/teacher")
    await teacher.fill("#t-title", "Browser class")
    await teacher.fill("#t-stream", "browser")
    await teacher.click("#t-create-submit")
    await expect(teacher.locator("#t-code")).to_have_text(re.compile(r"^[A-Z2-9]{8}$"))
    code = await teacher.locator("#t-code").text_content()
    await expect(teacher.locator("#t-ws-state")).to_have_text("connected")

    # Student joins by code and lands on the player page with the panel.
    await student.goto(base + "/join")
    await student.fill("#cls-code", code.lower())
    await student.fill("#cls-name", "Minji")
    await student.click("#cls-join-submit")
    await student.wait_for_url("**/student?stream=browser&session=*")
    await expect(student.locator("#cls-status")).to_have_text("connected")
    assert await student.evaluate("sessionStorage.getItem('airclass.token')")
    assert (
        await student.evaluate("sessionStorage.getItem('airclass.session')")
        == (student.url.split("session=")[1])
    )
    await expect(teacher.locator("#t-roster")).to_contain_text("Minji")

    # Chat both ways.
    await student.fill("#cls-chat-input", "Hello teacher")
    await student.press("#cls-chat-input", "Enter")
    await expect(teacher.locator("#t-chat")).to_contain_text("Minji: Hello teacher")
    await teacher.fill("#t-chat-input", "Hi Minji")
    await teacher.press("#t-chat-input", "Enter")
    await expect(student.locator("#cls-chat")).to_contain_text("kim: Hi Minji")

    # Quiz: create and publish on the teacher page, it pops up for the student.
    await teacher.fill("#t-q-question", "2 + 2 = ?")
    await teacher.fill("#t-q-options", "3\n4\n5")
    await teacher.fill("#t-q-correct", "2")
    await teacher.click("#t-q-submit")
    await teacher.locator("#t-quiz-list button", has_text="Publish").click()
    await expect(student.locator("#cls-quiz")).to_be_visible()
    await expect(student.locator("#cls-quiz-question")).to_have_text("2 + 2 = ?")
    await student.locator(".cls-option", has_text="4").click()
    await expect(student.locator("#cls-quiz-result")).to_have_text("Answer sent.")
    # The countdown reads in the page's language, light on dark is never dark on dark,
    # and the chosen answer stands out.
    await expect(student.locator("#cls-quiz-timer")).to_have_text(re.compile(r"^\d+ s left$"))
    timer_colors = await student.evaluate(
        "(() => { const s = getComputedStyle(document.getElementById('cls-quiz-timer'));"
        " return [s.color, s.backgroundColor]; })()"
    )
    assert timer_colors[0] != timer_colors[1]
    chosen = student.locator(".cls-option.chosen")
    await expect(chosen).to_have_text("2. 4")
    assert await chosen.evaluate("b => getComputedStyle(b).color") == "rgb(255, 255, 255)"
    await student.screenshot(path=tmp_path / "quiz-chosen.png")

    # The teacher's live results show the answer.
    await expect(teacher.locator(".t-recent")).to_contain_text("Minji: 4 ✓")
    await expect(teacher.locator(".t-answer-count")).to_contain_text("1 answers")

    # Closing shows the result to the student.
    await teacher.locator("#t-quiz-list button", has_text="Close").click()
    await expect(student.locator("#cls-quiz-result")).to_contain_text("1/1 correct")
    await student.click("#cls-quiz-close")
    await expect(student.locator("#cls-quiz")).to_be_hidden()
    # Language switch works on the panel.
    await student.click(".lang-toggle")
    await expect(student.locator("#cls-status")).to_have_text("연결됨")
    assert not errors, errors
