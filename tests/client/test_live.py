"""``client.live()`` against the Postgres/Redis deployment (daphne + a Celery model worker with the
tiny SAM3): a video file, a cv2 capture and numpy arrays streamed to live sessions, blocking and
asyncio; every frame answered once, prompts mid-stream, masks as pycocotools decodes them, the
session closed when the loop ends or is left."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from sam3_client import AsyncClient, Client, LiveFrame

from tests.client.conftest import sam3, served
from tests.conftest import ROOT, mp4_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
FRAMES = 8
CLICK = [[20.0, 20.0]]






@pytest.fixture
def video(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4_bytes(frames=FRAMES))
    return path


def check_results(results: list[LiveFrame], skipped: list[int], sent: int, clicked_from: int) -> None:
    """Every frame sent answered once, in order; the clicked object's masks are what pycocotools decodes."""
    seqs = [r.seq for r in results]
    assert sent == FRAMES and seqs == sorted(seqs) and sorted(seqs + skipped) == list(range(FRAMES))
    assert [r.frame for r in results] == list(range(len(results)))  # the server's count of computed frames
    tracked = [o for r in results if r.seq > clicked_from for o in r.objects if o.id >= 10_000]
    assert tracked, "the clicked object is tracked on the frames after the click"
    for obj in tracked:
        assert obj.mask.format == "rle" and obj.mask.array.shape == (48, 64)
        expected = coco_mask.decode({**obj.mask.raw, "counts": obj.mask.raw["counts"].encode()}).astype(bool)
        assert np.array_equal(obj.mask.array, expected)


def test_a_video_file_streamed_live_with_prompts_mid_stream(server, alice, video) -> None:
    with Client(server.url, alice.key) as client:
        live = client.live(video, text="dog")
        results: list[LiveFrame] = []
        for result in live:
            results.append(result)
            if result.seq == 1:  # a click on a computed frame, named by its seq
                live.prompt(seq=1, points=CLICK)
            if result.seq == 2:
                live.prompt(text="cat")
                live.prompt(seq=FRAMES + 5, points=CLICK)  # not a frame computed yet: refused, the stream goes on
        check_results(results, live.skipped, live.sent, clicked_from=1)
        assert live.errors == {} and live.texts == ["dog", "cat"]
        assert [e.code for e in live.prompt_errors] == ["frame_not_kept"]
        assert all(o.label in ("dog", "cat") for r in results for o in r.objects if o.id < 10_000)
        assert live.session_id is not None and client.sessions.get(live.session_id).status == "closed"
        assert served(server, "DELETE", f"/api/v1/sessions/{live.session_id}/", 204) == 1
        with pytest.raises(FileNotFoundError):
            client.live(video.with_name("none.mp4"))


def test_async_live_from_arrays_and_leaving_early_closes_the_session(server, alice, video) -> None:
    capture = cv2.VideoCapture(str(video))  # BGR frames, turned into RGB arrays for the async run
    arrays = []
    while (read := capture.read())[0]:
        arrays.append(read[1][..., ::-1].copy())
    capture.release()

    async def run() -> None:
        async with AsyncClient(server.url, alice.key) as client:
            async with client.live(arrays) as live:
                results = []
                async for result in live:
                    results.append(result)
                    if result.seq == 0:
                        live.prompt(seq=0, points=CLICK)
            check_results(results, live.skipped, live.sent, clicked_from=0)
            assert live.session_id is not None and (await client.sessions.get(live.session_id)).status == "closed"

            async with client.live(arrays, fps=50) as paced:  # a camera's pace; left after two frames
                async for result in paced:
                    if result.frame == 1:
                        break
            assert paced.session_id is not None and (await client.sessions.get(paced.session_id)).status == "closed"

    asyncio.run(run())


def test_a_capture_kept_with_store(server, alice, video) -> None:
    with Client(server.url, alice.key) as client:
        capture = cv2.VideoCapture(str(video))
        with client.live(capture, store=True) as live:
            results = list(live)
        assert sorted([r.seq for r in results] + live.skipped) == list(range(FRAMES))
        assert live.session_id is not None
        with client.sessions.get(live.session_id) as session:  # open until its owner closes it
            assert session.status == "ready" and session.info.kind == "live"
            assert [f.frame for f in session.frames()] == [r.frame for r in results]
        assert session.status == "closed"


def test_the_streaming_example(server, alice, video) -> None:
    """examples/stream_video.py, as the docs run it: the video's pace, a concept and a click."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "stream_video.py"), "--server", server.url, "--key", alice.key,
         "--video", str(video), "--text", "dog", "--click", "20,20"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "sending at 10.0 frames/s" in done.stdout
    summary = re.search(r"sent (\d+), delivered (\d+), skipped (\d+)", done.stdout)
    assert summary is not None and int(summary[1]) == FRAMES and int(summary[2]) + int(summary[3]) == FRAMES
    assert re.search(r"#1\d{4} ", done.stdout)  # the clicked object, tracked


def test_cli_streams_a_video_live(server, alice, video, tmp_path) -> None:
    out = tmp_path / "live.jsonl"
    run = sam3("live", str(video), "--text", "dog", "--text", "cat", "--out", str(out), server=server.url, key=alice.key)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    skipped = re.search(rf"sent {FRAMES}, computed {len(lines)}, skipped (\d+)", run.stderr)
    assert skipped is not None and len(lines) + int(skipped[1]) == FRAMES
    assert [line["frame"] for line in lines] == list(range(len(lines))) and lines[-1]["seq"] == FRAMES - 1
    assert all(o["label"] in ("dog", "cat") for line in lines for o in line["objects"])
