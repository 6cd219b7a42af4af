"""Live sessions through real processes: daphne (REST + websockets), a Celery model worker with the
tiny SAM3, Postgres and Redis; the client pushes JPEG/PNG frames as binary websocket messages."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np
import pytest
import requests
from django.utils import timezone
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from inference.live_frames import encode_frame
from inference.masks import decode_rle
from inference.messages import VideoPrompt
from sessions import services
from sessions.models import VideoSession
from tests.test_sessions import api

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
WIDTH, HEIGHT = 64, 48


@pytest.fixture
def server(start_server, model_worker):
    return start_server()


def jpeg(seq: int, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """A moving square on a gradient: every frame differs."""
    image = np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))[..., None].repeat(3, axis=2)
    x = 5 + seq % (width - 20)
    image[10:30, x : x + 15] = (200, 40, 40)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def open_live(server, client, **options) -> str:
    created = api(server, client.key, "POST", "/sessions/", json={"live": True, **options})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["kind"] == "live" and body["status"] == "ready" and body["video"] is None
    return body["id"]


def live_url(server, session_id: str, query: str = "") -> str:
    return f"{server.url.replace('http', 'ws')}/ws/sessions/{session_id}/live/{query}"


@contextmanager
def live_socket(server, client, session_id: str) -> Iterator[ClientConnection]:
    with connect(live_url(server, session_id), additional_headers={"X-API-Key": client.key}, open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "status"
        yield socket


def next_message(socket, *kinds: str) -> dict:
    while True:
        message = json.loads(socket.recv(timeout=60))
        if message["type"] in kinds:
            return message
        assert message["type"] == "status", message


def push_and_wait(socket, seq: int, ts: float | None = None) -> dict:
    socket.send(encode_frame(seq, jpeg(seq), ts))
    result = next_message(socket, "frame")
    socket.send(json.dumps({"type": "ack"}))
    return result


def test_frames_prompts_and_stored_results(server, alice) -> None:
    session_id = open_live(server, alice, store=True)
    with live_socket(server, alice, session_id) as socket:
        socket.send(json.dumps({"type": "prompt", "text": "dog"}))  # before any frame: tracked from the first one
        answer = next_message(socket, "prompt_result")
        assert answer["texts"] == ["dog"] and answer["objects"] == []
        for seq in (100, 101, 102):
            frame = push_and_wait(socket, seq, ts=1000.0 + seq)
            assert frame["seq"] == seq and frame["ts"] == 1000.0 + seq and frame["frame"] == seq - 100
            assert all(o["label"] == "dog" for o in frame["objects"])  # random weights: maybe none at all

        # a click on a frame the client names by its seq: a new object, tracked from then on
        socket.send(json.dumps({"type": "prompt", "seq": 101, "points": [[20, 20]], "point_labels": [1]}))
        clicked = next_message(socket, "prompt_result")
        object_id = clicked["object_id"]
        assert object_id >= 10_000 and clicked["frame"] == 1 and [o["id"] for o in clicked["objects"]] == [object_id]
        for seq in (103, 104, 105):
            frame = push_and_wait(socket, seq)
            tracked = [o for o in frame["objects"] if o["id"] == object_id]
            assert frame["seq"] == seq and len(tracked) == 1
            assert decode_rle(tracked[0]["mask"]).shape == (HEIGHT, WIDTH)

        socket.send(json.dumps({"type": "prompt", "seq": 3, "points": [[20, 20]]}))  # never sent: not a kept frame
        assert next_message(socket, "error")["code"] == "frame_not_kept"
        socket.send(json.dumps({"type": "prompt", "seq": 105, "points": [[500, 20]]}))
        assert next_message(socket, "error")["code"] == "outside_image"
        socket.send(json.dumps({"type": "remove_object", "object_id": object_id}))
        assert next_message(socket, "edit_result")["removed"] == object_id
        assert all(o["id"] != object_id for o in push_and_wait(socket, 106)["objects"])
        socket.send(json.dumps({"type": "propagate"}))
        assert next_message(socket, "error")["code"] == "live_session"

    frames = api(server, alice.key, "GET", f"/sessions/{session_id}/frames/?limit=100").json()
    assert [f["seq"] for f in frames["results"]] == list(range(100, 107))
    assert [f["frame"] for f in frames["results"]] == list(range(7))
    assert api(server, alice.key, "DELETE", f"/sessions/{session_id}/").status_code == 204


def test_latest_wins_when_the_client_is_faster_than_the_model(server, alice) -> None:
    session_id = open_live(server, alice, mask_format="none")
    sent = list(range(40))
    with live_socket(server, alice, session_id) as socket:
        socket.send(json.dumps({"type": "prompt", "text": "dog"}))
        next_message(socket, "prompt_result")
        push_and_wait(socket, 0)  # the tracker is set up
        socket.send(json.dumps({"type": "prompt", "seq": 0, "points": [[20, 20]]}))
        next_message(socket, "prompt_result")
        for seq in sent[1:]:  # as fast as the socket takes them: far faster than the model
            socket.send(encode_frame(seq, jpeg(seq)))
        computed, skipped = [0], []
        while sent[-1] not in computed:
            message = next_message(socket, "frame", "skipped")
            if message["type"] == "skipped":
                skipped += message["seqs"]
            else:
                computed.append(message["seq"])
                assert [o["mask"] for o in message["objects"]] == [None] * len(message["objects"])
                socket.send(json.dumps({"type": "ack"}))
    assert computed == sorted(computed)  # newest first never happens: frames are computed in order
    assert sorted(computed + skipped) == sent  # every frame either computed or reported skipped, once
    assert len(skipped) > len(sent) // 2  # the model took only what it had time for: nothing queued


def test_refused_frames_leave_the_socket_open(server, alice) -> None:
    session_id = open_live(server, alice)
    with live_socket(server, alice, session_id) as socket:
        huge = np.zeros((2200, 4000, 3), np.uint8)  # 8.8 MP: over the pixel bound, yet a small PNG
        socket.send(encode_frame(1, cv2.imencode(".png", huge)[1].tobytes()))
        error = next_message(socket, "error")
        assert error["code"] == "frame_too_many_pixels" and error["detail"]["seq"] == 1
        socket.send(encode_frame(2, b"\x00" * (3 * 1024 * 1024 + 10)))
        assert next_message(socket, "error")["code"] == "frame_too_large"
        socket.send(encode_frame(3, b"GIF89a not an image"))
        assert next_message(socket, "error")["code"] == "unsupported_image"
        socket.send(b"\x00\x00\x00\x05{bad}")
        assert next_message(socket, "error")["code"] == "invalid_frame"
        assert push_and_wait(socket, 4)["seq"] == 4  # still streaming
        socket.send(encode_frame(5, jpeg(5, width=80)))  # the stream's frames are 64x48
        error = next_message(socket, "error")
        assert error["detail"]["seq"] == 5 and "64x48" in error["message"]
        assert push_and_wait(socket, 6)["seq"] == 6
        # Over the server's hard limit (4 MiB): closed with 1009 "message too big", not dropped (1006).
        socket.send(encode_frame(7, b"\x00" * (4 * 1024 * 1024 + 10)))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                socket.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_auth_ownership_and_limits(start_server, model_worker, alice, bob) -> None:
    server = start_server(MAX_CONCURRENT_SESSIONS="2")
    session_id = open_live(server, alice)
    for headers in ({"X-API-Key": bob.key}, {}):  # someone else's live session; no credentials
        with pytest.raises(InvalidStatus) as refused:
            connect(live_url(server, session_id), additional_headers=headers, open_timeout=10)
        assert refused.value.response.status_code == 403
    ticket = api(server, alice.key, "POST", f"/sessions/{session_id}/ticket/").json()["ticket"]
    with connect(live_url(server, session_id, f"?ticket={ticket}"), open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "status"

    open_live(server, bob)
    refused_session = api(server, alice.key, "POST", "/sessions/", json={"live": True})
    assert refused_session.status_code == 503 and refused_session.json()["error"]["code"] == "too_many_sessions"
    both = api(server, alice.key, "POST", "/sessions/", json={"live": True, "video": session_id})
    assert both.status_code == 400

    # idle live sessions expire like any session: the socket is told and closed
    with live_socket(server, alice, session_id) as socket:
        VideoSession.objects.filter(pk=session_id).update(last_activity_at=timezone.now() - dt.timedelta(hours=2))
        assert session_id in services.sessions_sweep()["expired"]
        assert next_message(socket, "status")["status"] == "expired"
        deadline = time.monotonic() + 10
        with pytest.raises(ConnectionClosed):
            while time.monotonic() < deadline:
                socket.recv(timeout=10)
        assert socket.close_code == 4410


def test_a_long_stream_keeps_its_state_bounded(tiny_checkpoint) -> None:
    """In the worker's own objects (no server): what a stream keeps does not grow with its length."""
    from inference.live_frames import LiveFrame
    from inference.runtime.loader import load_sam3
    from inference.runtime.streaming import KEEP_FRAMES
    from inference.video_sessions.live import KEEP_HISTORY_FRAMES
    from inference.video_sessions.streaming import StreamSession, decode_image

    live = StreamSession(load_sam3(tiny_checkpoint, None, "cpu"), store=False, mask_format="rle")
    live.prompt(VideoPrompt(kind="text", frame=0, text="dog"))
    for seq in range(80):
        data = jpeg(seq)
        live.push(LiveFrame(seq, data, None, WIDTH, HEIGHT), decode_image(data))
        if seq == 2:
            live.prompt(VideoPrompt(kind="points", frame=2, points=[[20, 20]], point_labels=[1]))
    stream = live.stream
    assert stream is not None and stream.concept is not None and stream.interactive is not None
    for tracker in (stream.concept, stream.interactive):
        assert sorted(tracker.session.processed_frames._added) == list(range(80 - KEEP_FRAMES, 80))  # type: ignore[attr-defined]
    (outputs,) = stream.interactive.session.output_dict_per_obj.values()
    kept = sorted(outputs["non_cond_frame_outputs"])
    # tracked frames stay only near the current frame (79) or the prompted one (2), per StateBound
    assert kept and all(f >= 79 - KEEP_HISTORY_FRAMES or f <= 2 + KEEP_HISTORY_FRAMES for f in kept)
    assert len(kept) < 79 - 2 and list(outputs["cond_frame_outputs"]) == [2]
    assert sorted(live.frame_of_seq) == list(range(80 - KEEP_FRAMES, 80)) and live.object_ids() == [10_000]


def test_prompt_answers_match_the_openapi_schema(server, alice) -> None:
    """A live session's text prompt answers its texts and no frame; the schema says so (schemathesis found it did not)."""
    import jsonschema

    schema = requests.get(f"{server.url}/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}, timeout=30).json()
    response = schema["paths"]["/api/v1/sessions/{session_id}/prompts/"]["post"]["responses"]["200"]["content"]["application/json"]
    session_id = open_live(server, alice)
    answer = api(server, alice.key, "POST", f"/sessions/{session_id}/prompts/", json={"frame": 0, "text": "dog"})
    assert answer.status_code == 200, answer.text
    assert "frame" not in answer.json() and answer.json()["texts"] == ["dog"]
    jsonschema.validate(answer.json(), {**response["schema"], "components": schema["components"]})
