"""Studio's Live tab end to end: Chromium's synthetic camera (or a local video file) streamed into a
live session on the embedded server (`manage.py serve`, the tiny SAM3 in-process).

The masks on the live view are compared with the objects the server sent for the very frame shown,
read from the page's own websocket and decoded by pycocotools.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.studio.conftest import CHROMIUM, CHROMIUM_ARGS, assert_overlay_matches, colours_of, decode, h264_mp4

pytestmark = pytest.mark.slow
STAGE = "#live-stage"
FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """conftest's browser, with Chromium's synthetic camera (a moving test pattern) and no permission prompt."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # as conftest's browser: Playwright's loop vs the ORM
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[*CHROMIUM_ARGS, *FAKE_CAMERA])
            yield chromium
            chromium.close()


def watch_live_socket(page) -> list[dict]:
    """Every message the server sends on the page's live websockets, in order."""
    messages: list[dict] = []

    def opened(socket) -> None:
        if socket.url.endswith("/live/"):
            socket.on("framereceived", lambda payload: isinstance(payload, str) and messages.append(json.loads(payload)))

    page.page.on("websocket", opened)
    return messages


def stats(page) -> dict[str, int]:
    data = page.page.eval_on_selector("#live-stats", "(element) => ({...element.dataset})")
    return {name: int(value) for name, value in data.items()}


def start(page, server, rate: int) -> list[dict]:
    messages = watch_live_socket(page)
    page.open("#live")
    page.sign_in(server.key)
    page.page.wait_for_selector("#panel-live:not([hidden])")
    page.page.fill("#live-rate", str(rate))
    return messages


def stop(page, server) -> str:
    session_id = page.page.get_attribute(STAGE, "data-session")
    with page.page.expect_response(lambda response: response.request.method == "DELETE") as answer:
        page.page.click("#live-stop")
    assert answer.value.status == 204
    closed = server.api("GET", f"sessions/{session_id}/").json()
    assert closed["status"] == "closed" and closed["kind"] == "live"
    return session_id


def test_camera_stream_with_text_and_click_prompts(embedded_server, studio) -> None:
    page = studio(embedded_server.url)
    messages = start(page, embedded_server, rate=30)  # faster than the model: the server drops frames
    page.page.fill("#live-text", "dog")  # sent as soon as the socket opens
    page.page.click("#live-camera")
    page.page.wait_for_function("() => !document.querySelector('#live-start').disabled")
    page.page.click("#live-start")
    page.page.wait_for_function("() => Number(document.querySelector('#live-stats').dataset.frames) >= 5")
    page.page.wait_for_function("() => document.querySelector('#live-texts').textContent === 'dog'")
    assert any(m["type"] == "prompt_result" and m.get("texts") == ["dog"] for m in messages)
    page.shot("streaming")

    # A click on the frame shown: a new object on that frame (named by its seq), tracked from then on.
    shown_seq = int(page.page.get_attribute(f"{STAGE} .stage-masks", "data-frame"))
    page.click_picture(STAGE, 320, 240, (640, 480))
    page.page.wait_for_function("() => document.querySelectorAll('#live-objects li').length > 0")
    clicked = next(m for m in messages if m["type"] == "prompt_result" and "object_id" in m)
    assert clicked["object_id"] >= 10_000
    shown_frame = next(m["frame"] for m in messages if m["type"] == "frame" and m["seq"] == shown_seq)
    assert clicked["frame"] >= shown_frame  # the frame shown at the click, or one computed after it
    page.page.wait_for_function(f"() => Number(document.querySelector('#live-stats').dataset.frames) >= {stats(page)['frames'] + 3}")
    page.move_away()
    stop(page, embedded_server)
    page.shot("stopped")

    # What stays on screen: the last frame shown, with exactly the masks the server sent for it.
    seq = int(page.page.get_attribute(f"{STAGE} .stage-masks", "data-frame"))
    result = next(m for m in messages if m["type"] == "frame" and m["seq"] == seq)
    objects = [o for o in result["objects"] if o["mask"]]
    assert clicked["object_id"] in [o["id"] for o in objects]
    listed = page.page.eval_on_selector_all("#live-objects li", "(items) => items.map((item) => Number(item.dataset.object))")
    assert listed == [o["id"] for o in objects]
    assert_overlay_matches(page.overlay(STAGE), [decode(o["mask"]) for o in objects], colours_of(page.page, "#live-objects li"))

    # The counters are the socket's: every frame answered once, by a result or in a `skipped`. The page
    # counts what it handled before it closed the socket; a message already on the wire then reaches
    # the browser (and this log) but not the page, so the counters are those of a prefix of the log.
    frames = [m["seq"] for m in messages if m["type"] == "frame"]
    skipped = [seq for m in messages if m["type"] == "skipped" for seq in m["seqs"]]
    assert frames == sorted(frames) and not set(frames) & set(skipped)
    shown = stats(page)
    assert (shown["frames"], shown["skipped"]) in counts_of_prefixes(messages)
    assert f"{shown['skipped']} skipped" in page.page.inner_text("#live-stats")
    answered = shown["frames"] + shown["skipped"]
    assert answered <= shown["sent"] <= answered + 3  # at most 3 unanswered
    assert len(frames) + len(skipped) <= shown["sent"]


def counts_of_prefixes(messages: list[dict]) -> set[tuple[int, int]]:
    """(frames, skipped seqs) counted over each prefix of the socket's messages."""
    frames = skipped = 0
    counts = {(0, 0)}
    for message in messages:
        frames += message["type"] == "frame"
        skipped += len(message["seqs"]) if message["type"] == "skipped" else 0
        counts.add((frames, skipped))
    return counts


def test_a_local_video_file(embedded_server, studio, tmp_path: Path) -> None:
    page = studio(embedded_server.url)
    messages = start(page, embedded_server, rate=5)
    page.page.set_input_files("#live-file", str(h264_mp4(tmp_path / "clip.mp4", frames=30)))
    page.page.wait_for_function("() => !document.querySelector('#live-start').disabled")
    page.page.click("#live-start")
    page.page.wait_for_function("() => Number(document.querySelector('#live-stats').dataset.frames) >= 3")
    assert "clip.mp4" in page.page.inner_text("#live-source")
    page.shot("file")
    stop(page, embedded_server)
    assert page.page.is_disabled("#live-stop") and page.page.is_enabled("#live-start")
    assert {m["type"] for m in messages} >= {"status", "frame"}
