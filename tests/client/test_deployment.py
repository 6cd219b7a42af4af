"""The client against the Postgres/Redis deployment (daphne + a Celery model worker with the tiny
SAM3): video sessions over the websocket, blocking and asyncio; cancellation when the loop is
left; a slow reader; retries against the server's real 429 and 503 answers; `sam3 track`; and a
worker killed (kill -9) in the middle of `propagate()`, the iterator carrying on after recovery.
The kill comes last: the module's worker is the one `run_workers` restarts."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import redis
import requests
import sam3_client
from django.conf import settings
from sam3_client import AsyncClient, Client, RetryPolicy

from accounts.models import Quota
from sam3site.redis_clients import inflight_key
from tests.client.conftest import sam3, served
from tests.conftest import mp4_bytes, read_registry

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
FRAMES = 10
LONG = 70  # frames: more than the 64 a socket carries unacknowledged, and long enough to act mid-run






@pytest.fixture
def video(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4_bytes(frames=FRAMES))
    return path


@pytest.fixture
def long_video(tmp_path):
    path = tmp_path / "long.mp4"
    path.write_bytes(mp4_bytes(frames=LONG))
    return path




def test_a_session_from_prompts_to_propagation_and_close(server, alice, video) -> None:
    with Client(server.url, alice.key) as client:
        with client.sessions.create(video) as session:
            assert session.status == "ready" and session.info.frame_count == FRAMES and session.info.width == 64
            with client.sessions.create(video) as second:
                assert second.info.video == session.info.video  # the video is not uploaded twice
            text = session.add_text("dog", frame=0)
            assert text.frame == 0
            clicked = session.add_points([[20, 20]], frame=3)
            object_id = clicked.object_id
            assert object_id is not None and object_id >= 10_000 and clicked.object(object_id) is not None
            refined = session.add_points([[40, 30]], [0], frame=3, object_id=object_id)
            assert refined.object_id == object_id

            frames = list(session.propagate("both", start_frame=3))
            assert [f.frame for f in frames] == [3, 4, 5, 6, 7, 8, 9, 2, 1, 0]  # the documented order, each once
            for frame in frames:
                tracked = frame.object(object_id)
                assert tracked is not None and tracked.mask.array.shape == (48, 64) and tracked.mask.array.dtype == bool
            stored = list(session.frames(page_size=3))
            assert [f.frame for f in stored] == list(range(FRAMES))
            by_frame = {f.frame: f for f in frames}
            for frame in stored:  # what came over the socket is what the server stored
                live = by_frame[frame.frame].object(object_id)
                kept = frame.object(object_id)
                assert live is not None and kept is not None and np.array_equal(live.mask.array, kept.mask.array)

            info = session.refresh()
            assert info.propagation is not None and info.propagation.state == "done" and info.frames_stored == FRAMES
            assert [p.kind for p in info.prompts or []] == ["text", "points", "points"]
            assert object_id not in session.remove_object(object_id)
            assert session.reset() == []
        assert session.status == "closed"
        assert client.sessions.get(session.id).status == "closed"
        with pytest.raises(sam3_client.SessionEnded) as ended:
            list(session.frames())
        assert ended.value.status == 410 and ended.value.code == "session_closed"
        with pytest.raises(sam3_client.SessionEnded):
            list(session.propagate())
        assert session.id in [s.id for s in client.sessions.list()]


def test_leaving_the_loop_cancels_and_a_slow_reader_loses_nothing(server, alice, long_video) -> None:
    with Client(server.url, alice.key) as client, client.sessions.create(long_video) as session:
        object_id = session.add_points([[20, 20]], frame=0).object_id
        for index, _frame in enumerate(session.propagate()):
            if index == 2:
                break
        info = session.refresh()  # the cancellation has landed: the session takes prompts again
        assert info.status == "ready" and info.propagation is not None
        assert info.propagation.state == "cancelled" and info.propagation.frames_done < LONG
        session.add_points([[30, 30]], frame=0)

        # A reader that stops reading: the server sends 64 frames with masks, then notices only;
        # the stream reads those masks back from the stored results.
        frames = []
        for frame in session.propagate():
            frames.append(frame)
            if len(frames) == 1:
                while client.sessions.get(session.id).status == "propagating":
                    time.sleep(0.2)
        assert [f.frame for f in frames] == list(range(LONG))
        assert all(f.object(object_id) is not None for f in frames)
        assert served(server, "GET", f"/api/v1/sessions/{session.id}/frames/", 200) >= 1


def test_the_async_client_has_the_same_sessions(server, alice, long_video, video) -> None:
    async def scenario() -> tuple[list[int], list[int], sam3_client.SessionInfo]:
        async with AsyncClient(server.url, alice.key) as client:
            async with await client.sessions.create(video) as session:
                exemplars = await session.add_boxes([[5, 5, 40, 30]], threshold=0.0)
                assert exemplars.frame == 0
                object_id = (await session.add_points([[20, 20]], frame=0)).object_id
                assert object_id is not None
                async with session.propagate("backward", start_frame=FRAMES - 1) as stream:
                    seen = [frame.frame async for frame in stream if frame.object(object_id)]
                stored = [frame.frame async for frame in session.frames()]
                assert object_id not in await session.remove_object(object_id)
                assert await session.reset() == []
                assert (await client.sessions.get(session.id)).info.prompts is not None
                assert session.id in [s.id async for s in client.sessions.list()]
                with pytest.raises(sam3_client.Conflict) as idle:
                    await session.cancel()
                assert idle.value.code == "not_propagating"
            long = await client.sessions.create(long_video)
            await long.add_text("dog")
            async with long.propagate() as stream:
                async for _frame in stream:
                    break  # leaving the `async with` cancels the propagation
            info = await long.refresh()
            await long.close()
            return seen, stored, info

    seen, stored, info = asyncio.run(scenario())
    assert seen == list(range(FRAMES - 1, -1, -1)) and stored == list(range(FRAMES))
    assert info.status == "ready" and info.propagation is not None and info.propagation.state == "cancelled"


def test_busy_and_ended_sessions_raise_typed_errors(server, alice, long_video, tmp_path) -> None:
    # Long enough that the propagation is still running when the next calls arrive, however fast
    # the worker is (it is cancelled after the first frame).
    very_long = tmp_path / "very-long.mp4"
    very_long.write_bytes(mp4_bytes(frames=400))
    with Client(server.url, alice.key) as client:
        session = client.sessions.create(very_long)
        session.add_points([[20, 20]], frame=0)
        stream = session.propagate()
        next(stream)
        with pytest.raises(sam3_client.SessionBusy) as busy:
            session.add_points([[10, 10]], frame=0)
        assert busy.value.status == 409 and busy.value.code == "session_busy"
        # Closing mid-propagation ends the stream's session: it raises rather than hang. (Not
        # cancel first: a cancelled propagation may end the stream cleanly before the close lands.)
        session.close()
        with pytest.raises(sam3_client.SessionEnded) as ended:
            list(stream)
        assert ended.value.code == "session_closed"
        with pytest.raises(sam3_client.InvalidPrompt) as outside:
            client.sessions.create(long_video).add_points([[500, 5]])
        assert outside.value.code == "outside_image"


def test_overloaded_answers_are_retried_after_retry_after(server, alice) -> None:
    queue, limit = read_registry()[0].queue, settings.CONFIG.inference_queue_limit  # the server's, from the same environment
    store = redis.Redis.from_url(settings.REDIS_URL)
    image = np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    with Client(server.url, alice.key, max_retries=2) as client:
        upload = client.uploads.create(image)
        # As many requests "in hand" as the worker takes, until one second from now: full, then free again.
        soon = time.time() + 1.0
        store.zadd(inflight_key(queue), {f"other-{i}": soon for i in range(limit)})
        refused_before = served(server, "POST", "/api/v1/segment/", 503)
        result = client.segment(upload, text="dog")
        assert result.sha256 == upload.sha256
        assert served(server, "POST", "/api/v1/segment/", 503) > refused_before  # refused first, served after Retry-After

        far = time.time() + 60
        store.zadd(inflight_key(queue), {f"other-{i}": far for i in range(limit)})
        try:
            with Client(server.url, alice.key, max_retries=0) as impatient, pytest.raises(sam3_client.Overloaded) as refused:
                impatient.segment(upload, text="dog")
        finally:
            store.delete(inflight_key(queue))
    assert refused.value.status == 503 and refused.value.code == "overloaded" and refused.value.retry_after == 2


def test_rate_limited_answers_are_retried_and_quotas_raised_at_once(server, make_client) -> None:
    refused_before = served(server, "GET", "/api/v1/me/", 429)
    # A key limited to 1 request a minute whose window ends within seconds (windows are staggered per
    # user): its second request is refused with a short Retry-After, which the client waits out.
    for index in range(200):
        keyed = make_client(f"limited{index}")
        Quota.objects.create(user=keyed.user, requests_per_minute=1)
        headers = {"X-API-Key": keyed.key}
        requests.get(f"{server.url}/api/v1/me/", headers=headers, timeout=10)
        if 2 <= int(requests.get(f"{server.url}/api/v1/me/", headers=headers, timeout=10).headers.get("Retry-After", 99)) <= 4:
            break
    else:
        pytest.fail("no rate window ending in 2 to 4 s among 200 users")
    with Client(server.url, keyed.key, retry=RetryPolicy(max_retries=3, max_wait=10)) as client:
        assert client.me().username == f"limited{index}"
    assert served(server, "GET", "/api/v1/me/", 429) >= refused_before + 2  # the probe's and the client's first attempt

    # A daily quota asks to wait until midnight: beyond max_wait, raised at once with its Retry-After.
    daily = make_client("daily")
    Quota.objects.create(user=daily.user, daily_requests=1)
    with Client(server.url, daily.key) as client:
        client.me()
        with pytest.raises(sam3_client.QuotaExceeded) as exhausted:
            client.me()
    assert exhausted.value.code == "daily_quota_exceeded" and exhausted.value.retry_after is not None
    assert exhausted.value.retry_after > 60
    assert served(server, "GET", "/api/v1/me/", 429) >= refused_before + 3


def test_cli_tracks_a_video_into_json_lines(server, alice, video, tmp_path) -> None:
    out = tmp_path / "results.jsonl"
    run = sam3("track", str(video), "--click", "20,20", "--out", str(out), server=server.url, key=alice.key)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(FRAMES))
    assert all(len(line["objects"]) == 1 and line["objects"][0]["mask"]["size"] == [48, 64] for line in lines)
    session_id = re.search(r"session (\S+): 10 frames", run.stderr)
    assert session_id is not None
    with Client(server.url, alice.key) as client:
        assert client.sessions.get(session_id.group(1)).status == "closed"  # closed at the end
    missing = sam3("track", str(tmp_path / "none.mp4"), "--text", "dog", server=server.url, key=alice.key)
    assert missing.returncode == 2 and "No such file" in missing.stderr


def test_the_example_tracks_a_video(server, alice, video) -> None:
    from tests.conftest import ROOT

    run = subprocess.run(
        [sys.executable, "examples/track_video.py", "--server", server.url, "--key", alice.key, "--video", str(video), "--click", "20,20"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].endswith(f": {FRAMES} frames") and lines[1].startswith("object 1")
    assert [int(line.split(":")[0].split()[1]) for line in lines[2:]] == list(range(FRAMES))


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_propagation_survives_a_dropped_websocket(server, alice, long_video) -> None:
    """kill -9 of the web process holding the socket: `serve` starts another on the same port, the
    stream reconnects and reads what was computed meanwhile from the stored results."""
    with Client(server.url, alice.key) as client, client.sessions.create(long_video) as session:
        session.add_points([[20, 20]], frame=0)
        read_back = served(server, "GET", f"/api/v1/sessions/{session.id}/frames/", 200)
        frames = []
        for frame in session.propagate():
            frames.append(frame.frame)
            if len(frames) == 3:
                (web,) = children_of(server.process.pid)  # the one daphne process of SERVER_WORKERS=1
                os.kill(web, signal.SIGKILL)
    assert frames == list(range(LONG))
    assert served(server, "GET", f"/api/v1/sessions/{session.id}/frames/", 200) > read_back


def test_propagation_carries_on_after_its_worker_is_killed(server, alice, long_video) -> None:
    """kill -9 of the worker holding the session during propagate(): `run_workers` restarts it, the
    new worker rebuilds the session, and the same iterator resumes the propagation and hands over
    every frame once, in order."""
    with Client(server.url, alice.key) as client, client.sessions.create(long_video) as session:
        object_id = session.add_points([[20, 20]], frame=0).object_id
        frames, killed = [], None
        for frame in session.propagate():
            frames.append(frame.frame)
            assert frame.object(object_id) is not None
            if len(frames) == 3:
                killed = session.refresh().worker
                os.kill(int(killed.rsplit(":", 1)[1]), signal.SIGKILL)
        info = session.refresh()
    assert frames == list(range(LONG))
    assert info.worker != killed
    assert info.propagation is not None and info.propagation.resumed and info.propagation.state == "done"
