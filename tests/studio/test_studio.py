"""Studio end to end on the embedded default (`manage.py serve`, SQLite, the tiny SAM3 in-process):
sign-in, images by text and clicks, a video session from upload to reload, errors, and the page's
own guarantees (one host, no key in URLs, its Content-Security-Policy).

Each overlay check reads the canvas' pixels back and compares them with the masks the API returns
for the very request the page sent, decoded by pycocotools.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
from pycocotools import mask as coco_mask

from tests.studio.conftest import (
    assert_overlay_matches,
    colours_of,
    decode,
    h264_mp4,
    photo_png,
)

pytestmark = pytest.mark.slow
IMAGE_STAGE = "#image-stage"
VIDEO_STAGE = "#video-stage"


def test_rle_decoder_matches_pycocotools(embedded_server, studio) -> None:
    """rle.js against pycocotools' encoder: random masks, thin and large ones, empty and full ones."""
    rng = np.random.default_rng(3)
    masks = [
        rng.random((37, 53)) > 0.5,
        rng.random((1, 300)) > 0.9,
        rng.random((300, 1)) > 0.1,
        np.zeros((20, 30), dtype=bool),
        np.ones((20, 30), dtype=bool),
        np.pad(np.ones((900, 1200), dtype=bool), ((50, 50), (30, 30))),  # runs beyond 2^20: 6 groups of 5 bits
        np.kron(rng.random((24, 32)) > 0.6, np.ones((16, 16), dtype=bool)),
    ]
    encoded = []
    for mask in masks:
        rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        encoded.append({"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()})
    page = studio(embedded_server.url)
    page.open()
    decoded = page.page.evaluate(
        """async (rles) => {
            const { RleMask } = await import("/static/studio/rle.js");
            return rles.map((rle) => {
                const mask = new RleMask(rle);
                let bytes = "";
                for (const value of mask.toBytes()) bytes += value ? "1" : "0";
                return { bytes, area: mask.area, probe: mask.contains(rle.size[1] - 1, rle.size[0] - 1) };
            });
        }""",
        encoded,
    )
    for mask, got in zip(masks, decoded):
        assert got["bytes"] == "".join("1" if v else "0" for v in mask.ravel()), mask.shape
        assert got["area"] == int(mask.sum())
        assert got["probe"] == bool(mask[-1, -1])
    refused = page.page.evaluate(
        """async () => {
            const { decodeCounts } = await import("/static/studio/rle.js");
            try { decodeCounts("0a"); return null } catch (error) { return error.message }
        }"""
    )
    assert refused and "COCO RLE" in refused


def test_sign_in_with_a_bad_key_then_a_good_one(embedded_server, studio) -> None:
    page = studio(embedded_server.url)
    page.open()
    page.page.wait_for_selector("#tiny-banner:not([hidden])")
    ready = requests.get(f"{embedded_server.url}/readyz", timeout=10).json()
    assert page.page.inner_text("#tiny-banner") == ready["checks"]["model"]["model"]["warning"]
    page.shot("signed-out")

    page.sign_in("nope.wrong-key")
    shown = page.notice()
    refused = embedded_server.api("GET", "me/", key="nope.wrong-key")
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] in shown and "HTTP 401" in shown
    assert page.page.is_visible("#sign-in")
    page.shot("bad-key")

    page.sign_in(embedded_server.key)
    page.page.wait_for_selector("#workspace:not([hidden])")
    me = embedded_server.api("GET", "me/").json()
    assert page.page.inner_text("#account-user") == me["username"] == "alice"
    assert me["api_key"] in page.page.inner_text("#account-key")
    assert "uploads up to 1.0 MiB" in page.page.inner_text("#account-usage")
    assert page.page.is_hidden("#notice")
    assert page.page.evaluate("() => sessionStorage.getItem('sam3studio.apiKey')") == embedded_server.key
    page.shot("signed-in")

    page.page.reload()  # the key stays for the tab's life
    page.page.wait_for_selector("#workspace:not([hidden])")
    page.page.get_by_role("button", name="Sign out").click()
    assert page.page.is_visible("#sign-in")
    assert page.page.evaluate("() => sessionStorage.getItem('sam3studio.apiKey')") is None
    assert all(embedded_server.key not in url for _, url in page.requests)


def segment_request(page, action) -> tuple[dict, dict]:
    """The body of the segment request an action makes the page send, and the page's reply."""
    with page.page.expect_response(lambda response: response.url.endswith("/api/v1/segment/")) as answer:
        action()
    response = answer.value
    assert response.status == 200, response.text()
    page.page.wait_for_function("() => !document.querySelector('#segment').hasAttribute('aria-busy')")
    return response.request.post_data_json, response.json()


def instance_masks(reply: dict) -> list[np.ndarray]:
    return [decode(instance["mask"]) for result in reply["results"] for instance in result["instances"]]


def assert_image_overlay(page, server, body: dict, page_reply: dict, hidden: frozenset[int] = frozenset()) -> None:
    """The canvas shows exactly the masks the API returns for the request the page sent."""
    again = server.api("POST", "segment/", json=body)
    assert again.status_code == 200, again.text
    assert again.json()["results"] == page_reply["results"]  # the same request gets the same masks
    masks = instance_masks(again.json())
    colours = colours_of(page.page, "#instance-list li")
    assert len(colours) == len(masks) > 0
    page.move_away()
    shown = [index for index in range(len(masks)) if index not in hidden]
    assert_overlay_matches(page.overlay(IMAGE_STAGE), [masks[i] for i in shown], [colours[i] for i in shown])


def test_image_by_text_and_by_clicks_overlay_matches_the_api(embedded_server, studio, tmp_path: Path) -> None:
    page = studio(embedded_server.url)
    page.open("#image")
    page.sign_in(embedded_server.key)
    page.page.set_input_files("#image-file", photo_png(tmp_path / "photo.png"))
    page.page.wait_for_selector("#image-stage:not([hidden])")
    page.page.get_by_label("Score threshold").fill("0.2")  # the tiny random model scores low

    # Text: two phrases are two prompts.
    page.page.get_by_label("Text prompts").fill("dog, cat")
    body, reply = segment_request(page, lambda: page.page.get_by_label("Text prompts").press("Enter"))
    assert [p["text"] for p in body["prompts"]] == ["dog", "cat"] and body["threshold"] == 0.2
    assert body["image"] and "file" not in body
    assert_image_overlay(page, embedded_server, body, reply)
    assert page.page.inner_text("#instance-count") == str(len(instance_masks(reply)))
    page.shot("text")

    # Toggling an instance off removes exactly its mask.
    page.page.locator("#instance-list li input[type=checkbox]").first.uncheck()
    assert_image_overlay(page, embedded_server, body, reply, hidden=frozenset({0}))
    page.page.locator("#instance-list li input[type=checkbox]").first.check()

    # The threshold re-asks the server; the image's features now come from the worker's cache.
    body, reply = segment_request(page, lambda: page.page.get_by_label("Score threshold").fill("0.25"))
    assert body["threshold"] == 0.25 and reply["cache_hit"] is True
    assert page.page.get_attribute("#image-stats", "data-cache-hit") == "true"
    assert "Features from the cache" in page.page.inner_text("#image-stats")

    # Clicks: P for the point tool, a left click (positive) and a right click (negative).
    page.page.get_by_label("Text prompts").fill("")
    page.page.keyboard.press("Escape")
    page.page.locator(f"{IMAGE_STAGE} .stage-marks").focus()
    page.page.keyboard.press("p")
    assert page.page.get_attribute("#image-tools [data-tool=point]", "aria-pressed") == "true"
    _, _ = segment_request(page, lambda: page.click_picture(IMAGE_STAGE, 150, 120, (320, 240)))
    body, reply = segment_request(page, lambda: page.click_picture(IMAGE_STAGE, 40, 30, (320, 240), button="right"))
    assert body["prompts"][0]["point_labels"] == [1, 0]
    assert np.allclose(body["prompts"][0]["points"], [[150.5, 120.5], [40.5, 30.5]], atol=0.6)
    assert reply["results"][0]["prompt"]["kind"] == "interactive"
    assert_image_overlay(page, embedded_server, body, reply)
    page.shot("clicks")

    # Z takes the last click back.
    body, reply = segment_request(page, lambda: page.page.keyboard.press("z"))
    assert body["prompts"][0]["point_labels"] == [1] and len(body["prompts"]) == 1
    assert_image_overlay(page, embedded_server, body, reply)

    # B: an exemplar box (dragged) joins the clicks as a concept prompt of its own.
    page.page.keyboard.press("b")
    box = page.page.locator(f"{IMAGE_STAGE} .stage-marks").bounding_box()
    scale = box["width"] / 320
    with page.page.expect_response(lambda response: response.url.endswith("/api/v1/segment/")) as answer:
        page.page.mouse.move(box["x"] + 80 * scale, box["y"] + 60 * scale)
        page.page.mouse.down()
        page.page.mouse.move(box["x"] + 200 * scale, box["y"] + 170 * scale, steps=5)
        page.page.mouse.up()
    body = answer.value.request.post_data_json
    assert [sorted(prompt) for prompt in body["prompts"]] == [["box_labels", "boxes"], ["point_labels", "points"]]
    assert body["prompts"][0]["box_labels"] == [1]
    x1, y1, x2, y2 = body["prompts"][0]["boxes"][0]
    assert abs(x1 - 80) <= 1 and abs(y1 - 60) <= 1 and abs(x2 - 200) <= 1 and abs(y2 - 170) <= 1
    page.page.wait_for_function("() => !document.querySelector('#segment').hasAttribute('aria-busy')")
    assert_image_overlay(page, embedded_server, body, answer.value.json())
    page.shot("box")

    # The COCO download carries the visible instances' masks as the API sent them.
    with page.page.expect_download() as download:
        page.page.get_by_role("button", name="COCO JSON").click()
    coco = json.loads(Path(download.value.path()).read_text())
    sent = [instance for result in answer.value.json()["results"] for instance in result["instances"]]
    assert [a["segmentation"] for a in coco["annotations"]] == [instance["mask"] for instance in sent]
    assert [a["area"] for a in coco["annotations"]] == [int(decode(i["mask"]).sum()) for i in sent]
    assert coco["images"][0]["width"] == 320 and coco["images"][0]["height"] == 240
    with page.page.expect_download() as download:
        page.page.get_by_role("button", name="Overlay PNG").click()
    assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_video_session_propagates_every_frame_and_reopens_after_a_reload(embedded_server, studio, tmp_path: Path) -> None:
    frames = 12
    page = studio(embedded_server.url)
    page.open("#video")
    page.sign_in(embedded_server.key)
    page.page.wait_for_selector("#session-browser:not([hidden])")
    page.page.set_input_files("#video-file", h264_mp4(tmp_path / "clip.mp4", frames=frames))
    page.page.wait_for_function("() => document.querySelector('#video-uploads').value !== ''")
    page.page.get_by_role("button", name="Open session").click()
    page.page.wait_for_selector("#session-view:not([hidden])")
    page.page.wait_for_selector("#socket-state[data-state=open]")
    page.page.wait_for_selector(f"{VIDEO_STAGE} video")  # the browser plays the clip under the masks
    session_id = page.page.evaluate("() => location.hash.split('/')[1]")
    assert embedded_server.api("GET", f"sessions/{session_id}/").json()["status"] == "ready"

    # A click on the block on frame 0 starts a new object.
    with page.page.expect_response(lambda r: r.url.endswith(f"/sessions/{session_id}/prompts/")) as answer:
        page.click_picture(VIDEO_STAGE, 30, 55, (160, 120))
    clicked = answer.value.json()
    sent = answer.value.request.post_data_json
    assert sent["frame"] == 0 and sent["point_labels"] == [1] and np.allclose(sent["points"], [[30.5, 55.5]], atol=0.6)
    page.page.wait_for_selector(f"#object-list li[data-object='{clicked['object_id']}']")
    page.shot("clicked")

    # A second click (right: negative) refines that object; Z takes it back: the server has no undo,
    # so the page removes the object and rebuilds it from the first click, as a new object.
    with page.page.expect_response(lambda r: r.url.endswith("/prompts/")) as refined:
        page.click_picture(VIDEO_STAGE, 120, 100, (160, 120), button="right")
    sent = refined.value.request.post_data_json
    assert sent["object_id"] == clicked["object_id"] and sent["point_labels"] == [0]
    with page.page.expect_response(lambda r: r.url.endswith("/remove-object/")) as removed, page.page.expect_response(
        lambda r: r.url.endswith("/prompts/")
    ) as rebuilt:
        page.page.keyboard.press("z")
    assert removed.value.request.post_data_json == {"object_id": clicked["object_id"]}
    sent = rebuilt.value.request.post_data_json
    assert "object_id" not in sent and sent["point_labels"] == [1] and np.allclose(sent["points"], [[30.5, 55.5]], atol=0.6)
    object_id = rebuilt.value.json()["object_id"]
    assert object_id != clicked["object_id"]
    page.page.wait_for_selector(f"#object-list li[data-object='{object_id}']")
    assert page.page.locator(f"#object-list li[data-object='{clicked['object_id']}']").count() == 0

    # Propagate and watch every frame arrive and be drawn.
    page.page.evaluate(
        """() => {
            const masks = document.querySelector("#video-stage .stage-masks");
            window.drawnFrames = [];
            new MutationObserver(() => window.drawnFrames.push(Number(masks.dataset.frame)))
                .observe(masks, { attributes: true, attributeFilter: ["data-frame"] });
        }"""
    )
    page.page.get_by_role("button", name="Propagate from this frame").click()
    page.page.wait_for_selector("#propagation-text[data-finished=done]", timeout=120_000)
    assert page.page.get_attribute("#propagation-text", "data-received") == str(frames)
    assert page.page.get_attribute("#propagation-text", "data-expected") == str(frames)
    assert sorted(set(page.page.evaluate("() => window.drawnFrames"))) == list(range(frames))
    page.shot("propagated")

    stored = embedded_server.api("GET", f"sessions/{session_id}/frames/", params={"limit": 100}).json()["results"]
    assert [result["frame"] for result in stored] == list(range(frames))
    assert all([o["id"] for o in result["objects"]] == [object_id] for result in stored)

    def assert_frames_drawn(which: list[int]) -> None:
        for frame in which:
            page.page.get_by_label("Frame", exact=True).fill(str(frame))
            page.page.wait_for_selector(f"{VIDEO_STAGE} .stage-masks[data-frame='{frame}']")
            objects = stored[frame]["objects"]
            assert [int(i) for i in page.page.eval_on_selector_all("#object-list li", "(l) => l.map((i) => i.dataset.object)")] == [
                o["id"] for o in objects
            ]
            page.move_away()
            colours = colours_of(page.page, "#object-list li")
            assert_overlay_matches(page.overlay(VIDEO_STAGE), [decode(o["mask"]) for o in objects], colours)

    assert_frames_drawn(list(range(frames)))
    page.page.locator(f"{VIDEO_STAGE} .stage-marks").focus()
    page.page.keyboard.press("ArrowLeft")  # the keyboard steps frames too
    page.page.wait_for_selector(f"{VIDEO_STAGE} .stage-masks[data-frame='{frames - 2}']")

    # Playback: the video plays and each frame it presents gets its stored masks, to the last one.
    page.page.keyboard.press("Home")
    page.page.wait_for_selector(f"{VIDEO_STAGE} .stage-masks[data-frame='0']")
    page.page.evaluate("() => { window.drawnFrames = []; }")
    page.page.keyboard.press(" ")
    page.page.wait_for_selector("#video-play[aria-pressed=false]", timeout=30_000)  # ended
    played = page.page.evaluate("() => window.drawnFrames")
    assert played[-1] == frames - 1 and played == sorted(played) and len(set(played)) >= frames // 2, played

    # Persistence: a reload reopens the session (its id is in the URL's fragment, the key in the tab).
    page.page.reload()
    page.page.wait_for_selector("#session-view:not([hidden])")
    page.page.wait_for_selector(f"{VIDEO_STAGE} .stage-masks[data-frame='0']")
    assert_frames_drawn([0, frames - 1])
    page.shot("reloaded")

    # ...and so does the list of sessions, which shows what is stored. A live session (frames pushed
    # by another client) is listed and can be closed, not opened: Studio has no live view yet.
    live_id = embedded_server.api("POST", "sessions/", json={"live": True}).json()["id"]
    page.page.get_by_role("button", name="← All sessions").click()
    row = page.page.locator(f"tr[data-session='{session_id}']")
    row.wait_for()
    assert f"{frames} / {frames}" in row.inner_text() and "ready" in row.inner_text()
    live_row = page.page.locator(f"tr[data-session='{live_id}']")
    assert "live stream" in live_row.inner_text() and live_row.get_by_role("button", name="Open").count() == 0
    page.shot("sessions")
    live_row.get_by_role("button", name="Close").click()
    page.page.wait_for_selector(f"tr[data-session='{live_id}'][data-status=closed]")
    row.get_by_role("button", name="Open").click()
    page.page.wait_for_selector(f"{VIDEO_STAGE} .stage-masks[data-frame='0']")
    assert_frames_drawn([frames // 2])

    page.page.get_by_role("button", name="Close session").click()
    page.page.wait_for_selector(f"tr[data-session='{session_id}'][data-status=closed]")
    assert embedded_server.api("GET", f"sessions/{session_id}/").json()["status"] == "closed"


def test_an_oversize_upload_is_refused_with_the_limit(embedded_server, studio, tmp_path: Path) -> None:
    page = studio(embedded_server.url)
    page.open("#image")
    page.sign_in(embedded_server.key)
    page.page.wait_for_selector("#workspace:not([hidden])")
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(1536 * 1024))  # 1.5 MiB; the server's limit is 1 MiB
    page.page.set_input_files("#image-file", big)
    shown = page.notice()
    assert "big.png is 1.5 MiB, over your upload limit of 1.0 MiB" in shown
    assert ("POST", f"{embedded_server.url}/api/v1/uploads/") not in page.requests  # refused before sending
    page.shot("oversize")
    # The server refuses it too, with the same limit, for clients that do not check first.
    refused = embedded_server.api("POST", "uploads/", files={"file": ("big.png", big.read_bytes())})
    assert refused.status_code == 413 and refused.json()["error"]["detail"]["limit_bytes"] == 1024 * 1024


def test_the_page_talks_to_its_server_only_and_keeps_the_key_out_of_urls(embedded_server, studio) -> None:
    page = studio(embedded_server.url)
    response = page.page.goto(f"{embedded_server.url}/studio/")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
    assert response.headers["x-frame-options"] == "DENY"
    page.sign_in(embedded_server.key)
    page.page.wait_for_selector("#workspace:not([hidden])")
    page.page.get_by_role("tab", name="Video sessions").click()
    page.page.wait_for_selector("#session-browser:not([hidden])")
    page.page.get_by_role("tab", name="Image").click()
    page.page.keyboard.press("?")
    assert page.page.is_visible("#help")
    page.shot("help")
    assert page.requests, "the page made no requests at all"
    assert not any(embedded_server.key in url for _, url in page.requests)
    # The studio fixture checks, for this and every other test, that no request left the server.
