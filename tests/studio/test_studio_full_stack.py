"""Studio against a deployment's parts: daphne with Postgres and Redis, and Celery model workers
(the tiny SAM3) in their own processes. Frames travel worker -> Redis channel layer -> websocket ->
browser; refusals (503 server full, 429 rate limit) show their Retry-After; a killed worker shows
as "recovering" and the propagation resumes from the page."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from accounts.models import Quota
from tests.conftest import launch_workers
from tests.studio.conftest import KEEP_ASYNC_CHECK, Server, assert_overlay_matches, colours_of, decode, h264_mp4

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
VIDEO_STAGE = "#video-stage"


@pytest.fixture(scope="module")
def workers(django_db_setup, tiny_checkpoint, tmp_path_factory):
    """Two CPU model workers (one torch thread each): when one is killed the other, already loaded,
    notices within seconds and rebuilds its sessions."""
    started = launch_workers(
        tmp_path_factory.mktemp("studio-workers"), tiny_checkpoint, devices=("cpu", "cpu"), OMP_NUM_THREADS="1", **KEEP_ASYNC_CHECK
    )
    yield started
    started.stop()


def open_new_session(page, video: Path) -> None:
    page.page.get_by_role("tab", name="Video sessions").click()
    page.page.wait_for_selector("#session-browser:not([hidden])")
    page.page.set_input_files("#video-file", video)
    page.page.wait_for_function("() => document.querySelector('#video-uploads').value !== ''")
    page.page.get_by_role("button", name="Open session").click()


def click_and_propagate(page, session_id: str, point: tuple[int, int], size: tuple[int, int]) -> None:
    page.page.wait_for_selector("#socket-state[data-state=open]")
    with page.page.expect_response(lambda r: r.url.endswith(f"/sessions/{session_id}/prompts/")):
        page.click_picture(VIDEO_STAGE, *point, size)
    page.page.wait_for_selector("#object-list li")
    page.page.get_by_role("button", name="Propagate from this frame").click()


def test_a_session_over_redis_and_model_workers_and_refusals_with_their_wait(
    start_server, workers, make_client, tmp_path: Path, studio
) -> None:
    live = start_server(MAX_CONCURRENT_SESSIONS="1", **KEEP_ASYNC_CHECK)
    alice, bob = make_client("alice"), make_client("bob")
    server = Server(live.url, alice.key)
    frames = 10
    clip = h264_mp4(tmp_path / "clip.mp4", frames=frames)

    page = studio(live.url)
    page.open()
    page.page.wait_for_selector("#tiny-banner:not([hidden])")  # /readyz lists the workers' tiny model
    assert "tiny random-weight SAM3" in page.page.inner_text("#tiny-banner")
    page.sign_in(alice.key)
    open_new_session(page, clip)
    page.page.wait_for_selector("#session-view:not([hidden])")
    session_id = page.page.evaluate("() => location.hash.split('/')[1]")
    click_and_propagate(page, session_id, (30, 55), (160, 120))
    page.page.wait_for_selector("#propagation-text[data-finished=done]", timeout=120_000)
    assert page.page.get_attribute("#propagation-text", "data-received") == str(frames)
    page.shot("propagated")

    stored = server.api("GET", f"sessions/{session_id}/frames/", params={"limit": 100}).json()["results"]
    assert [result["frame"] for result in stored] == list(range(frames))
    page.page.reload()
    page.page.wait_for_selector(f"{VIDEO_STAGE} .stage-masks[data-frame='0']")
    for frame in (0, frames - 1):
        page.page.get_by_label("Frame", exact=True).fill(str(frame))
        page.page.wait_for_selector(f"{VIDEO_STAGE} .stage-masks[data-frame='{frame}']")
        page.move_away()
        objects = stored[frame]["objects"]
        assert_overlay_matches(page.overlay(VIDEO_STAGE), [decode(o["mask"]) for o in objects], colours_of(page.page, "#object-list li"))

    # The server holds one session at most: bob is told so, with the wait from Retry-After.
    Quota.objects.create(user=bob.user, requests_per_minute=8)
    other = studio(live.url)
    other.open()
    other.sign_in(bob.key)
    with other.page.expect_response(lambda r: r.url.endswith("/api/v1/sessions/") and r.request.method == "POST") as refused:
        open_new_session(other, clip)
    assert refused.value.status == 503
    wait = int(refused.value.headers["retry-after"])
    shown = other.notice()
    assert refused.value.json()["error"]["message"] in shown and "too_many_sessions" in shown
    assert re.search(rf"Retry in ({wait}|{wait - 1}) s", shown), shown
    other.shot("server-full")

    # Over his 8 requests a minute, bob's refreshes are refused with 429 and their own wait.
    for _ in range(10):
        with other.page.expect_response(lambda r: r.url.endswith("/api/v1/me/")) as answer:
            other.page.get_by_role("button", name="Refresh usage").click()
        if answer.value.status == 429:
            break
    assert answer.value.status == 429
    wait = int(answer.value.headers["retry-after"])
    other.page.wait_for_selector("#notice[data-code=rate_limited]")
    shown = other.page.inner_text("#notice")
    assert answer.value.json()["error"]["message"] in shown
    assert re.search(rf"Retry in ({wait}|{wait - 1}) s", shown), shown
    other.shot("rate-limited")


def test_a_killed_worker_shows_as_recovering_and_the_page_resumes(start_server, workers, make_client, tmp_path, studio) -> None:
    live = start_server(**KEEP_ASYNC_CHECK)
    alice = make_client("alice")
    server = Server(live.url, alice.key)
    frames = 16  # enough that the kill lands mid-propagation
    page = studio(live.url)
    page.open()
    page.sign_in(alice.key)
    open_new_session(page, h264_mp4(tmp_path / "long.mp4", frames=frames, width=64, height=48))
    page.page.wait_for_selector("#session-view:not([hidden])")
    session_id = page.page.evaluate("() => location.hash.split('/')[1]")
    click_and_propagate(page, session_id, (15, 25), (64, 48))
    page.page.wait_for_function("() => Number(document.querySelector('#propagation-text').dataset.received) >= 1")

    # The status badge and banner as each status event left them (recovering may last only a moment).
    page.page.evaluate(
        """() => {
            const badge = document.querySelector("#session-status");
            const banner = document.querySelector("#session-banner");
            window.statusLog = [];
            new MutationObserver(() => window.statusLog.push([badge.textContent, banner.hidden ? "" : banner.textContent]))
                .observe(badge, { childList: true, characterData: true, subtree: true });
        }"""
    )
    worker = server.api("GET", f"sessions/{session_id}/").json()["worker"]
    os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
    page.page.wait_for_function(
        "() => window.statusLog.findIndex(([s]) => s === 'recovering') >= 0"
        " && window.statusLog.slice(window.statusLog.findIndex(([s]) => s === 'recovering')).some(([s]) => s === 'ready')",
        timeout=60_000,
    )
    log = page.page.evaluate("() => window.statusLog")
    recovering = next(banner for status, banner in log if status == "recovering")
    assert "rebuilding it from its prompt log" in recovering, log
    page.page.wait_for_selector("#propagation-resume:not([hidden])")
    assert "Recovered on another worker" in page.page.inner_text("#session-banner")
    assert page.page.get_attribute("#propagation-text", "data-finished") == "interrupted"
    page.shot("recovered")

    page.page.get_by_role("button", name="Resume").click()
    page.page.wait_for_selector("#propagation-text[data-finished=done]", timeout=120_000)
    stored = server.api("GET", f"sessions/{session_id}/frames/", params={"limit": 100}).json()
    assert stored["count"] == frames
    page.page.get_by_label("Frame", exact=True).fill(str(frames - 1))
    page.page.wait_for_selector(f"{VIDEO_STAGE} .stage-masks[data-frame='{frames - 1}']")
    page.move_away()
    last = stored["results"][-1]["objects"]
    assert_overlay_matches(page.overlay(VIDEO_STAGE), [decode(o["mask"]) for o in last], colours_of(page.page, "#object-list li"))
    page.shot("resumed")
