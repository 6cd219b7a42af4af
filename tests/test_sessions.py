"""Video sessions through real processes: daphne (REST + websockets), a Celery model worker with the
tiny SAM3, Postgres and Redis."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from inference.masks import decode_rle
from sessions.models import FrameResult, VideoSession
from tests.conftest import mp4_bytes, read_registry

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
FRAMES = 10


@pytest.fixture
def server(start_server, model_worker):
    return start_server()


def api(server, key: str, method: str, path: str, **kwargs):
    return requests.request(method, f"{server.url}/api/v1{path}", headers={"X-API-Key": key}, timeout=60, **kwargs)


def open_session(server, client, frames: int = FRAMES) -> str:
    upload = client.client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("v.mp4", mp4_bytes(frames=frames))}, format="multipart")
    created = api(server, client.key, "POST", "/sessions/", json={"video": upload.json()["id"]})
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "ready" and created.json()["frame_count"] == frames
    return created.json()["id"]


def wait_for(predicate, timeout: float = 60, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise AssertionError("condition not reached in time")


def propagation_finished(server, key: str, session_id: str):
    body = api(server, key, "GET", f"/sessions/{session_id}/").json()
    return body if body["status"] == "ready" and body["propagation"].get("state") not in (None, "running") else None


def ws_url(server, session_id: str, query: str = "") -> str:
    return f"{server.url.replace('http', 'ws')}/ws/sessions/{session_id}/{query}"


def live_sessions_in_worker() -> int:
    """Sessions held in the model worker's memory, as its heartbeat reports them (1 s behind)."""
    time.sleep(1.5)
    return sum(w.sessions for w in read_registry())


def next_of_type(socket, kind: str) -> dict:
    """The next message of a kind, skipping status/progress events that may come in between."""
    while True:
        message = json.loads(socket.recv(timeout=30))
        if message["type"] == kind:
            return message
        assert message["type"] in ("status", "progress"), message


def test_lifecycle_over_rest(server, alice) -> None:
    session_id = open_session(server, alice)
    text = api(server, alice.key, "POST", f"/sessions/{session_id}/prompts/", json={"frame": 0, "text": "dog"})
    assert text.status_code == 200, text.text
    assert text.json()["frame"] == 0
    clicked = api(
        server, alice.key, "POST", f"/sessions/{session_id}/prompts/", json={"frame": 3, "points": [[20, 20]], "point_labels": [1]}
    )
    assert clicked.status_code == 200, clicked.text
    object_id = clicked.json()["object_id"]
    assert object_id >= 10_000 and [o["id"] for o in clicked.json()["objects"]] == [object_id]
    refined = api(server, alice.key, "POST", f"/sessions/{session_id}/prompts/",
                  json={"frame": 3, "object_id": object_id, "points": [[40, 30]], "point_labels": [0]})
    assert refined.json()["object_id"] == object_id

    accepted = api(server, alice.key, "POST", f"/sessions/{session_id}/propagate/", json={"direction": "both", "start_frame": 3})
    assert accepted.status_code == 202
    finished = wait_for(lambda: propagation_finished(server, alice.key, session_id))
    assert finished["propagation"]["state"] == "done"
    assert [p["kind"] for p in finished["prompts"]] == ["text", "points", "points"]

    frames = api(server, alice.key, "GET", f"/sessions/{session_id}/frames/?limit=100").json()
    assert frames["count"] == FRAMES == len(frames["results"])
    assert [f["frame"] for f in frames["results"]] == list(range(FRAMES))
    for frame in frames["results"]:
        tracked = [o for o in frame["objects"] if o["id"] == object_id]
        assert len(tracked) == 1
        assert decode_rle(tracked[0]["mask"]).shape == (48, 64)
    page = api(server, alice.key, "GET", f"/sessions/{session_id}/frames/?from_frame=8").json()
    assert [f["frame"] for f in page["results"]] == [8, 9]
    output = Path(settings.OUTPUT_DIR) / "sessions" / session_id / "frames"
    assert len(list(output.glob("*.json"))) == FRAMES

    assert api(server, alice.key, "POST", f"/sessions/{session_id}/remove-object/", json={"object_id": object_id}).status_code == 200
    held = live_sessions_in_worker()
    assert api(server, alice.key, "DELETE", f"/sessions/{session_id}/").status_code == 204
    assert VideoSession.objects.get(pk=session_id).status == "closed"
    assert not output.exists()
    wait_for(lambda: live_sessions_in_worker() == held - 1)  # the worker freed the session


def test_lifecycle_over_the_websocket(server, alice) -> None:
    session_id = open_session(server, alice)
    with connect(ws_url(server, session_id), additional_headers={"X-API-Key": alice.key}, open_timeout=10) as socket:
        hello = json.loads(socket.recv(timeout=10))
        assert hello["type"] == "status" and hello["status"] == "ready" and hello["frame_count"] == FRAMES
        socket.send(json.dumps({"type": "prompt", "frame": 0, "box": [5, 5, 40, 40]}))
        result = json.loads(socket.recv(timeout=30))
        assert result["type"] == "prompt_result" and result["objects"]
        socket.send(json.dumps({"type": "propagate", "direction": "forward"}))
        seen_frames, kinds = [], []
        while True:
            message = json.loads(socket.recv(timeout=60))
            kinds.append(message["type"])
            if message["type"] == "frame":
                seen_frames.append(message["frame"])
                assert message["objects"][0]["mask"]["size"] == [48, 64]
            if message["type"] == "done":
                break
        assert seen_frames == list(range(FRAMES))
        assert kinds[0] == "propagation" and "progress" in kinds and kinds[-1] == "done"
        assert message["frames_done"] == FRAMES
        assert next_of_type(socket, "status")["status"] == "ready"
        # malformed messages get an error and the socket stays usable
        socket.send("this is not json")
        assert next_of_type(socket, "error")["code"] == "invalid_message"
        socket.send(json.dumps({"type": "prompt", "frame": 999, "points": [[1, 1]]}))
        assert next_of_type(socket, "error")["code"] == "frame_out_of_range"
        socket.send(json.dumps({"type": "prompt", "frame": 0}))
        assert next_of_type(socket, "error")["code"] == "invalid"
        socket.send(json.dumps({"type": "dance"}))
        assert next_of_type(socket, "error")["code"] == "invalid_message"
        socket.send(json.dumps({"type": "cancel"}))
        assert next_of_type(socket, "error")["code"] == "not_propagating"


def test_websocket_auth_tickets_and_owner_isolation(server, alice, bob) -> None:
    session_id = open_session(server, alice)
    for headers in ({}, {"X-API-Key": "wrong.key"}, {"X-API-Key": bob.key}):
        with pytest.raises(InvalidStatus) as refused:  # closed before accept: the handshake is refused
            connect(ws_url(server, session_id), additional_headers=headers, open_timeout=10)
        assert refused.value.response.status_code == 403
    assert api(server, bob.key, "GET", f"/sessions/{session_id}/").status_code == 404
    assert api(server, bob.key, "POST", f"/sessions/{session_id}/ticket/").status_code == 404

    ticket = api(server, alice.key, "POST", f"/sessions/{session_id}/ticket/").json()["ticket"]
    with connect(ws_url(server, session_id, f"?ticket={ticket}"), open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "status"
    with pytest.raises(InvalidStatus):  # single use
        connect(ws_url(server, session_id, f"?ticket={ticket}"), open_timeout=10)
    ticket = api(server, alice.key, "POST", f"/sessions/{session_id}/ticket/").json()["ticket"]
    with connect(ws_url(server, session_id), subprotocols=[f"ticket.{ticket}"], open_timeout=10) as socket:
        assert socket.subprotocol == f"ticket.{ticket}"
        assert json.loads(socket.recv(timeout=10))["type"] == "status"


def test_websocket_origin_is_checked(start_server, model_worker, alice) -> None:
    server = start_server(ALLOWED_HOSTS='["127.0.0.1", "localhost"]')
    session_id = open_session(server, alice)
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server, session_id), additional_headers={"X-API-Key": alice.key, "Origin": "http://evil.example"}, open_timeout=10)
    assert refused.value.response.status_code == 403
    headers = {"X-API-Key": alice.key, "Origin": "http://localhost"}
    with connect(ws_url(server, session_id), additional_headers=headers, open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "status"


def test_cancel_and_resume(server, alice) -> None:
    frames = 60
    session_id = open_session(server, alice, frames=frames)
    api(server, alice.key, "POST", f"/sessions/{session_id}/prompts/", json={"frame": 0, "points": [[20, 20]]})
    assert api(server, alice.key, "POST", f"/sessions/{session_id}/propagate/", json={}).status_code == 202
    busy = api(server, alice.key, "POST", f"/sessions/{session_id}/prompts/", json={"frame": 0, "text": "dog"})
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "session_busy"
    assert api(server, alice.key, "POST", f"/sessions/{session_id}/cancel/").status_code == 202
    cancelled = wait_for(lambda: propagation_finished(server, alice.key, session_id))
    assert cancelled["propagation"]["state"] == "cancelled"
    stored = FrameResult.objects.filter(session_id=session_id).count()
    assert 0 < stored < frames
    resumed = api(server, alice.key, "POST", f"/sessions/{session_id}/propagate/", json={"resume": True})
    assert resumed.status_code == 202 and resumed.json()["propagation"]["start_frame"] == stored
    finished = wait_for(lambda: propagation_finished(server, alice.key, session_id), timeout=120)
    assert finished["propagation"]["state"] == "done"
    assert FrameResult.objects.filter(session_id=session_id).count() == frames


def test_bad_input(server, model_worker, alice) -> None:
    session_id = open_session(server, alice)
    post = lambda path, body: api(server, alice.key, "POST", f"/sessions/{session_id}{path}", json=body)  # noqa: E731
    assert post("/propagate/", {}).json()["error"]["code"] == "nothing_to_propagate"
    assert post("/prompts/", {"frame": FRAMES, "text": "dog"}).json()["error"]["code"] == "frame_out_of_range"
    assert post("/prompts/", {"frame": -1, "text": "dog"}).status_code == 400
    assert post("/prompts/", {"frame": 0, "object_id": 77, "points": [[1, 1]]}).json()["error"]["code"] == "unknown_object"
    assert post("/prompts/", {"frame": 0, "object_id": 1, "text": "dog"}).status_code == 400
    assert post("/remove-object/", {"object_id": 12345}).json()["error"]["code"] == "unknown_object"
    assert post("/propagate/", {"start_frame": 500}).json()["error"]["code"] == "frame_out_of_range"
    assert post("/propagate/", {"resume": True}).json()["error"]["code"] == "nothing_to_resume"
    assert post("/propagate/", {"direction": "sideways"}).status_code == 400
    image = alice.client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("i.png", _png())}, format="multipart").json()["id"]
    assert api(server, alice.key, "POST", "/sessions/", json={"video": image}).json()["error"]["code"] == "not_a_video"
    assert api(server, alice.key, "POST", "/sessions/", json={"video": "00000000-0000-4000-8000-000000000000"}).status_code == 404
    assert api(server, alice.key, "DELETE", f"/sessions/{session_id}/").status_code == 204
    closed = post("/prompts/", {"frame": 0, "text": "dog"})
    assert closed.status_code == 410 and closed.json()["error"]["code"] == "session_closed"
    # The worker logs clients' mistakes as what they are: one INFO line with the code, no traceback.
    refusals = [line for line in model_worker.log().splitlines() if "Model work refused" in line]
    for code in ("nothing_to_propagate", "unknown_object"):
        assert any(f" {code} (" in line and "| INFO" in line for line in refusals), code
    assert "Model work failed" not in model_worker.log()


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_per_user_session_quota(server, alice, bob) -> None:
    from accounts.models import Quota

    Quota.objects.create(user=alice.user, max_concurrent_sessions=1)
    first = open_session(server, alice)
    upload = alice.client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("v.mp4", mp4_bytes())}, format="multipart").json()["id"]
    refused = api(server, alice.key, "POST", "/sessions/", json={"video": upload})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "session_quota_exceeded"
    assert refused.headers["Retry-After"].isdigit()
    open_session(server, bob)  # others are not affected
    assert api(server, alice.key, "DELETE", f"/sessions/{first}/").status_code == 204
    assert api(server, alice.key, "POST", "/sessions/", json={"video": upload}).status_code == 201


def test_server_wide_session_limit(start_server, model_worker, alice, bob) -> None:
    server = start_server(MAX_CONCURRENT_SESSIONS="2")
    open_session(server, alice)
    open_session(server, bob)
    upload = alice.client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("v.mp4", mp4_bytes())}, format="multipart").json()["id"]
    refused = api(server, alice.key, "POST", "/sessions/", json={"video": upload})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "too_many_sessions"
    assert "Retry-After" in refused.headers


def test_expiry_and_the_cleanup_command(server, alice) -> None:
    session_id = open_session(server, alice)
    api(server, alice.key, "POST", f"/sessions/{session_id}/prompts/", json={"frame": 0, "points": [[10, 10]]})
    api(server, alice.key, "POST", f"/sessions/{session_id}/propagate/", json={"max_frames": 2})
    wait_for(lambda: propagation_finished(server, alice.key, session_id))
    output = Path(settings.OUTPUT_DIR) / "sessions" / session_id
    assert output.exists()
    VideoSession.objects.filter(pk=session_id).update(last_activity_at=timezone.now() - dt.timedelta(hours=2))

    def cleanup(*extra: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", "cleanup_sessions", *extra], cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "DATABASE_URL": server_database_url()},
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert f"Would expire 1 idle session(s): {session_id}" in cleanup("--dry-run")
    assert VideoSession.objects.get(pk=session_id).status == "ready" and output.exists()
    assert f"Expired 1 idle session(s): {session_id}" in cleanup()
    assert VideoSession.objects.get(pk=session_id).status == "expired" and not output.exists()
    assert "Expired 0 idle session(s)" in cleanup()  # idempotent
    expired = api(server, alice.key, "POST", f"/sessions/{session_id}/prompts/", json={"frame": 0, "text": "dog"})
    assert expired.status_code == 410 and expired.json()["error"]["code"] == "session_expired"
    # results of an expired session are gone with it, but its record stays readable
    assert api(server, alice.key, "GET", f"/sessions/{session_id}/").json()["status"] == "expired"


def server_database_url() -> str:
    from tests.conftest import _test_database_url

    return _test_database_url()


def test_admin_lists_sessions_and_closes_them(server, alice, admin_user) -> None:
    from django.test import Client

    session_id = open_session(server, alice)
    browser = Client()
    browser.force_login(admin_user)
    held = live_sessions_in_worker()
    page = browser.get("/admin/video_sessions/videosession/").content.decode()
    assert session_id in page and "alice" in page and "ready" in page
    assert browser.get(f"/admin/video_sessions/videosession/{session_id}/change/").status_code == 200
    response = browser.post(
        "/admin/video_sessions/videosession/", {"action": "close_selected", "_selected_action": [session_id]}, follow=True
    )
    assert "Closed 1 session(s)." in response.content.decode()
    assert VideoSession.objects.get(pk=session_id).status == "closed"
    wait_for(lambda: live_sessions_in_worker() == held - 1)


def test_slow_readers_get_notices_beyond_the_unacknowledged_window(server, alice) -> None:
    from sessions.consumers import UNACKED_FRAME_LIMIT

    frames = UNACKED_FRAME_LIMIT + 6
    session_id = open_session(server, alice, frames=frames)
    api(server, alice.key, "POST", f"/sessions/{session_id}/prompts/", json={"frame": 0, "points": [[20, 20]]})

    def run(ack: bool) -> list[dict]:
        received = []
        with connect(ws_url(server, session_id), additional_headers={"X-API-Key": alice.key}, open_timeout=10) as socket:
            next_of_type(socket, "status")
            socket.send(json.dumps({"type": "propagate"}))
            while (message := json.loads(socket.recv(timeout=60)))["type"] != "done":
                if message["type"] == "frame":
                    received.append(message)
                    if ack:
                        socket.send(json.dumps({"type": "ack"}))
            next_of_type(socket, "status")
        return received

    silent = run(ack=False)
    assert [m["frame"] for m in silent] == list(range(frames))
    assert all("objects" in m for m in silent[:UNACKED_FRAME_LIMIT])
    assert all(m["masks_omitted"] and m["object_count"] == 1 for m in silent[UNACKED_FRAME_LIMIT:])
    stored = api(server, alice.key, "GET", f"/sessions/{session_id}/frames/?from_frame={UNACKED_FRAME_LIMIT}").json()
    assert [f["frame"] for f in stored["results"]] == list(range(UNACKED_FRAME_LIMIT, frames))  # the masks are there
    acknowledging = run(ack=True)
    assert all("objects" in m for m in acknowledging)


def test_concurrent_sessions_interleave_with_image_requests(server, alice, bob) -> None:
    import io

    from PIL import Image

    frames = 50
    sessions = [(client, open_session(server, client, frames=frames)) for client in (alice, bob)]
    for client, session_id in sessions:
        api(server, client.key, "POST", f"/sessions/{session_id}/prompts/", json={"frame": 0, "points": [[20, 20]]})
    for client, session_id in sessions:
        assert api(server, client.key, "POST", f"/sessions/{session_id}/propagate/", json={}).status_code == 202
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    started = time.monotonic()
    image = requests.post(f"{server.url}/api/v1/segment/", headers={"X-API-Key": alice.key}, timeout=60,
                          files={"file": ("a.png", buffer.getvalue())}, data={"prompts": '[{"text": "dog"}]'})
    image_seconds = time.monotonic() - started
    assert image.status_code == 200, image.text
    # the image did not wait for the propagations: both were still running when it was answered
    still_running = [VideoSession.objects.get(pk=session_id).status for _, session_id in sessions]
    assert still_running == ["propagating", "propagating"], image_seconds
    for client, session_id in sessions:
        finished = wait_for(lambda key=client.key, sid=session_id: propagation_finished(server, key, sid), timeout=120)
        assert finished["propagation"]["state"] == "done"
        assert FrameResult.objects.filter(session_id=session_id).count() == frames
