"""Video sessions driven the way real clients break them: absurd clicks, backward and resumed
propagations, closed and expired sessions, odd websocket messages and clients, close during a
propagation. Real daphne server, real Celery model worker with the tiny SAM3, Postgres, Redis."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from sessions.consumers import MAX_MESSAGE_BYTES, SESSION_ENDED_CLOSE_CODE
from sessions.models import FrameResult, VideoSession
from tests.conftest import png_bytes
from tests.test_sessions import (
    ROOT,
    api,
    live_sessions_in_worker,
    next_of_type,
    open_session,
    propagation_finished,
    server_database_url,
    wait_for,
    ws_url,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
WIDTH, HEIGHT = 64, 48  # conftest's mp4_bytes


@pytest.fixture
def server(start_server, model_worker):
    return start_server()


def post(server, client, session_id: str, path: str, body: dict | None = None):
    return api(server, client.key, "POST", f"/sessions/{session_id}{path}", json=body or {})


def error_code(response) -> str:
    return response.json()["error"]["code"]


@contextmanager
def socket_for(server, client, session_id: str) -> Iterator[ClientConnection]:
    with connect(ws_url(server, session_id), additional_headers={"X-API-Key": client.key}, open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "status"
        yield socket


def start_propagation(socket, body: dict, *, until_frames: int | None = None) -> tuple[dict, list[int]]:
    """Start a propagation over the websocket; its record, and the frames it delivers in delivery
    order: all of them (until ``done``), or the first ``until_frames``."""
    socket.send(json.dumps({"type": "propagate", **body}))
    answer, frames = None, []
    while answer is None or (len(frames) < until_frames if until_frames is not None else True):
        message = json.loads(socket.recv(timeout=60))
        if message["type"] == "done":
            break
        assert message["type"] in ("propagation", "frame", "status", "progress"), message
        if message["type"] == "propagation":
            answer = message
        elif message["type"] == "frame":
            frames.append(message["frame"])
    assert answer is not None and answer["state"] == "running"
    if until_frames is None:
        assert next_of_type(socket, "status")["status"] == "ready"
    return answer, frames


def propagated_frames(socket, body: dict) -> list[int]:
    return start_propagation(socket, body)[1]


def cancel_and_wait(server, client, session_id: str, socket: ClientConnection) -> dict:
    """Cancel the running propagation; its record once it has stopped (the socket read past its end)."""
    assert post(server, client, session_id, "/cancel/").status_code == 202
    while json.loads(socket.recv(timeout=60))["type"] != "cancelled":
        pass
    assert next_of_type(socket, "status")["status"] == "ready"
    return wait_for(lambda: propagation_finished(server, client.key, session_id))["propagation"]


# --- 6: clicks are checked against the frame, as on images ---

def test_prompts_outside_the_frame_are_refused_like_on_images(server, alice) -> None:
    session_id = open_session(server, alice)
    outside = [
        {"frame": 0, "points": [[1e308, 1]], "point_labels": [1]},
        {"frame": 0, "points": [[-1, 5]]},
        {"frame": 0, "points": [[10, HEIGHT + 0.5]]},
        {"frame": 0, "box": [0, 0, WIDTH + 1, 10]},
        {"frame": 0, "boxes": [[0, 0, 10, 1e300]]},
    ]
    for body in outside:
        refused = post(server, alice, session_id, "/prompts/", body)
        assert refused.status_code == 400, (body, refused.text)
        assert error_code(refused) == "outside_image"
        assert refused.json()["error"]["detail"] == {"width": WIDTH, "height": HEIGHT}
    edge = post(server, alice, session_id, "/prompts/", {"frame": 0, "points": [[WIDTH, HEIGHT]]})
    assert edge.status_code == 200, edge.text  # the edges belong to the frame, as on images
    assert [p["kind"] for p in api(server, alice.key, "GET", f"/sessions/{session_id}/").json()["prompts"]] == ["points"]

    with socket_for(server, alice, session_id) as socket:  # the websocket takes the same path
        socket.send(json.dumps({"type": "prompt", "frame": 0, "points": [[1e308, 1]]}))
        assert next_of_type(socket, "error")["code"] == "outside_image"

    upload = alice.client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("i.png", png_bytes(WIDTH, HEIGHT))}, format="multipart")
    image = requests.post(
        f"{server.url}/api/v1/segment/", headers={"X-API-Key": alice.key}, timeout=60,
        json={"image": upload.json()["id"], "prompts": [{"points": [[1e308, 1]], "point_labels": [1]}]},
    )
    assert image.status_code == 400 and error_code(image) == "outside_image"
    assert image.json()["error"]["detail"] == {"prompt": 0, "width": WIDTH, "height": HEIGHT}


def test_text_over_the_encoders_tokens_is_refused_in_sessions_like_on_images(server, alice) -> None:
    from tests.test_text_prompts import FEW_WORDS_MANY_TOKENS  # 4 words, 33 tokens for the tiny vocabulary

    session_id = open_session(server, alice)
    for body in ({"frame": 0, "text": FEW_WORDS_MANY_TOKENS}, {"frame": 0, "boxes": [[1, 1, 9, 9]], "text": FEW_WORDS_MANY_TOKENS}):
        refused = post(server, alice, session_id, "/prompts/", body)
        assert refused.status_code == 400, refused.text
        assert error_code(refused) == "prompt_too_long"
        assert refused.json()["error"]["message"].startswith("The text prompt has 33 tokens")
    assert api(server, alice.key, "GET", f"/sessions/{session_id}/").json()["prompts"] == []  # nothing logged
    assert post(server, alice, session_id, "/prompts/", {"frame": 0, "text": "dog"}).status_code == 200


# --- 8: every propagation delivers each frame once, in its direction's order ---

def test_propagations_deliver_each_frame_once_in_order(server, alice) -> None:
    frames, middle = 12, 5
    session_id = open_session(server, alice, frames=frames)
    assert post(server, alice, session_id, "/prompts/", {"frame": 0, "text": "dog"}).status_code == 200
    assert post(server, alice, session_id, "/prompts/", {"frame": frames - 1, "points": [[20, 20]]}).status_code == 200
    with socket_for(server, alice, session_id) as socket:
        last_first = propagated_frames(socket, {"direction": "backward", "start_frame": frames - 1})
        assert last_first == list(range(frames - 1, -1, -1))
        assert propagated_frames(socket, {"direction": "backward", "start_frame": middle}) == list(range(middle, -1, -1))
        both = propagated_frames(socket, {"direction": "both", "start_frame": middle})
        assert both == list(range(middle, frames)) + list(range(middle - 1, -1, -1))
        assert propagated_frames(socket, {"direction": "forward", "start_frame": 2, "max_frames": 4}) == [2, 3, 4, 5, 6]
    stored = api(server, alice.key, "GET", f"/sessions/{session_id}/frames/?limit=100").json()["results"]
    assert [f["frame"] for f in stored] == list(range(frames))


# --- 9: resume continues the last propagation, not whatever frames were ever stored ---

def test_resume_continues_the_last_propagation(server, alice) -> None:
    frames = 60
    session_id = open_session(server, alice, frames=frames)
    post(server, alice, session_id, "/prompts/", {"frame": 0, "points": [[20, 20]]})
    assert post(server, alice, session_id, "/propagate/").status_code == 202
    assert wait_for(lambda: propagation_finished(server, alice.key, session_id), timeout=120)["propagation"]["state"] == "done"
    assert FrameResult.objects.filter(session_id=session_id).count() == frames  # every frame stored once already

    with socket_for(server, alice, session_id) as socket:
        start_propagation(socket, {"start_frame": 0}, until_frames=3)
        cancelled = cancel_and_wait(server, alice, session_id, socket)
    assert cancelled["state"] == "cancelled" and 2 <= cancelled["last_frame"] < frames - 1
    resumed = post(server, alice, session_id, "/propagate/", {"resume": True})
    assert resumed.status_code == 202, resumed.text
    assert resumed.json()["propagation"]["start_frame"] == cancelled["last_frame"] + 1
    assert resumed.json()["propagation"]["direction"] == "forward" and resumed.json()["propagation"]["resumed"]
    done = wait_for(lambda: propagation_finished(server, alice.key, session_id), timeout=120)["propagation"]
    assert done["state"] == "done" and done["frames_done"] == frames - 1 - cancelled["last_frame"]
    assert error_code(post(server, alice, session_id, "/propagate/", {"resume": True})) == "nothing_to_resume"


def test_resume_of_both_directions_finishes_both_legs(server, alice) -> None:
    frames, start = 60, 20
    session_id = open_session(server, alice, frames=frames)
    post(server, alice, session_id, "/prompts/", {"frame": start, "points": [[20, 20]]})
    with socket_for(server, alice, session_id) as socket:
        start_propagation(socket, {"direction": "both", "start_frame": start}, until_frames=3)
        cancelled = cancel_and_wait(server, alice, session_id, socket)
        assert cancelled["state"] == "cancelled" and cancelled["last_frame"] is not None
        resumed, rest = start_propagation(socket, {"resume": True})
    last = cancelled["last_frame"]
    if last >= start:  # stopped in the forward leg: its rest, then the whole backward leg
        assert rest == list(range(last + 1, frames)) + list(range(start - 1, -1, -1))
    else:  # stopped in the backward leg
        assert rest == list(range(last - 1, -1, -1))
    assert resumed["resumed"] and resumed["start_frame"] == rest[0]
    assert FrameResult.objects.filter(session_id=session_id).count() == frames


# --- 10: ended sessions answer 410 everywhere but their record and a repeated close ---

ENDPOINTS = [
    ("GET", "/frames/", None),
    ("POST", "/prompts/", {"frame": 0, "text": "dog"}),
    ("POST", "/remove-object/", {"object_id": 10_000}),
    ("POST", "/reset/", None),
    ("POST", "/propagate/", {}),
    ("POST", "/propagate/", {"resume": True}),
    ("POST", "/cancel/", None),
    ("POST", "/ticket/", None),
]


def assert_gone(server, client, session_id: str, code: str) -> None:
    for method, path, body in ENDPOINTS:
        response = api(server, client.key, method, f"/sessions/{session_id}{path}", json=body)
        assert response.status_code == 410, (method, path, response.text)
        assert error_code(response) == code, (method, path)
    record = api(server, client.key, "GET", f"/sessions/{session_id}/")
    assert record.status_code == 200 and record.json()["status"] == code.removeprefix("session_")
    assert api(server, client.key, "DELETE", f"/sessions/{session_id}/").status_code == 204  # idempotent
    assert VideoSession.objects.get(pk=session_id).status == code.removeprefix("session_")  # and changes nothing
    with connect(ws_url(server, session_id), additional_headers={"X-API-Key": client.key}, open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["status"] == code.removeprefix("session_")
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=10)
    assert socket.close_code == SESSION_ENDED_CLOSE_CODE


def test_closed_and_expired_sessions_are_gone(server, alice) -> None:
    closed, expired = open_session(server, alice), open_session(server, alice)
    for session_id in (closed, expired):
        post(server, alice, session_id, "/prompts/", {"frame": 0, "points": [[10, 10]]})
        post(server, alice, session_id, "/propagate/", {"max_frames": 2})
        wait_for(lambda session_id=session_id: propagation_finished(server, alice.key, session_id))
        assert api(server, alice.key, "GET", f"/sessions/{session_id}/frames/").json()["count"] == 3

    assert api(server, alice.key, "DELETE", f"/sessions/{closed}/").status_code == 204
    assert_gone(server, alice, closed, "session_closed")
    assert not FrameResult.objects.filter(session_id=closed).exists()  # the index went with the files

    VideoSession.objects.filter(pk=expired).update(last_activity_at=timezone.now() - dt.timedelta(hours=2))
    cleanup = subprocess.run(
        [sys.executable, "manage.py", "cleanup_sessions"], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "DATABASE_URL": server_database_url()},
    )
    assert cleanup.returncode == 0, cleanup.stderr
    assert_gone(server, alice, expired, "session_expired")


# --- 11: binary, empty and oversized websocket messages get an error; the socket stays open ---

def test_odd_websocket_messages_get_an_error_and_the_socket_stays_open(server, alice) -> None:
    session_id = open_session(server, alice)
    with socket_for(server, alice, session_id) as socket:
        socket.send(b"\x00\x01binary")
        assert next_of_type(socket, "error")["code"] == "invalid_message"
        socket.send("")
        assert next_of_type(socket, "error")["code"] == "invalid_message"
        socket.send(json.dumps({"type": "prompt", "frame": 0, "text": "x" * (MAX_MESSAGE_BYTES + 1024)}))
        too_large = next_of_type(socket, "error")
        assert too_large["code"] == "message_too_large" and too_large["detail"] == {"limit_bytes": MAX_MESSAGE_BYTES}
        socket.send(json.dumps({"type": "prompt", "frame": 0, "points": [[20, 20]]}))
        assert next_of_type(socket, "prompt_result")["objects"]


# --- 12: programs send no Origin; they are let in with a key or a ticket, browsers still checked ---

def test_origin_less_clients_with_credentials_are_let_in(start_server, model_worker, alice) -> None:
    server = start_server(ALLOWED_HOSTS='["127.0.0.1"]')
    session_id = open_session(server, alice)
    with connect(ws_url(server, session_id), additional_headers={"X-API-Key": alice.key}, open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "status"
    ticket = post(server, alice, session_id, "/ticket/").json()["ticket"]
    with connect(ws_url(server, session_id, f"?ticket={ticket}"), open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "status"
    port = server.url.rsplit(":", 1)[1]
    with connect(ws_url(server, session_id), additional_headers={"X-API-Key": alice.key, "Origin": f"http://127.0.0.1:{port}"},
                 open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["type"] == "status"
    ticket = post(server, alice, session_id, "/ticket/").json()["ticket"]
    for headers, query in (
        ({}, ""),  # no Origin and no credentials
        ({"X-API-Key": alice.key, "Origin": "http://evil.example"}, ""),  # a disallowed origin, even with a key
        ({"Origin": "http://evil.example"}, f"?ticket={ticket}"),
    ):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(server, session_id, query), additional_headers=headers, open_timeout=10)
        assert refused.value.response.status_code == 403


# --- 14: the websocket is told when its session expires or is closed ---

def test_websocket_is_told_when_its_session_expires(server, alice) -> None:
    session_id = open_session(server, alice)
    with socket_for(server, alice, session_id) as socket:
        VideoSession.objects.filter(pk=session_id).update(last_activity_at=timezone.now() - dt.timedelta(hours=2))
        cleanup = subprocess.run(
            [sys.executable, "manage.py", "cleanup_sessions"], cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "DATABASE_URL": server_database_url()},
        )
        assert cleanup.returncode == 0, cleanup.stderr
        assert next_of_type(socket, "status")["status"] == "expired"
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=10)
    assert socket.close_code == SESSION_ENDED_CLOSE_CODE


# --- close wins over a running propagation ---

def test_close_during_a_propagation_stays_closed(server, alice) -> None:
    frames = 120
    session_id = open_session(server, alice, frames=frames)
    post(server, alice, session_id, "/prompts/", {"frame": 0, "points": [[20, 20]]})
    held = live_sessions_in_worker()
    with socket_for(server, alice, session_id) as socket:
        assert post(server, alice, session_id, "/propagate/").status_code == 202
        wait_for(lambda: FrameResult.objects.filter(session_id=session_id).count() >= 3, every=0.05)
        assert api(server, alice.key, "DELETE", f"/sessions/{session_id}/").status_code == 204
        ended = wait_for(lambda: (s := VideoSession.objects.get(pk=session_id)).propagation["state"] != "running" and s)
        time.sleep(1)  # nothing late turns it back
        assert VideoSession.objects.get(pk=session_id).status == "closed"
        assert ended.propagation["state"] == "cancelled" and ended.propagation["last_frame"] < frames - 1
        assert not FrameResult.objects.filter(session_id=session_id).exists()
        events = []
        with pytest.raises(ConnectionClosed):
            while True:
                events.append(json.loads(socket.recv(timeout=30)))
    assert socket.close_code == SESSION_ENDED_CLOSE_CODE
    assert {"type": "status", "status": "closed"} in events
    assert {"type": "status", "status": "ready"} not in events
    wait_for(lambda: live_sessions_in_worker() == held - 1)


# --- coverage: reset, and the session list is per user ---

def test_reset_forgets_every_object(server, alice) -> None:
    session_id = open_session(server, alice)
    post(server, alice, session_id, "/prompts/", {"frame": 0, "text": "dog"})
    clicked = post(server, alice, session_id, "/prompts/", {"frame": 2, "points": [[20, 20]]}).json()["object_id"]
    reset = post(server, alice, session_id, "/reset/")
    assert reset.status_code == 200 and reset.json()["objects"] == []
    refused = post(server, alice, session_id, "/propagate/")
    assert refused.status_code == 409 and error_code(refused) == "nothing_to_propagate"
    assert error_code(post(server, alice, session_id, "/remove-object/", {"object_id": clicked})) == "unknown_object"
    record = api(server, alice.key, "GET", f"/sessions/{session_id}/").json()
    assert [p["kind"] for p in record["prompts"]] == ["text", "points", "reset"]
    assert record["status"] == "ready" and record["propagation"] == {}
    again = post(server, alice, session_id, "/prompts/", {"frame": 1, "points": [[20, 20]]})
    assert again.status_code == 200 and again.json()["object_id"] == 10_000  # ids start over


def test_session_list_is_per_user(server, alice, bob) -> None:
    alices = {open_session(server, alice), open_session(server, alice)}
    bobs = open_session(server, bob)
    listed = lambda client: {s["id"] for s in api(server, client.key, "GET", "/sessions/").json()["results"]}  # noqa: E731
    assert listed(alice) == alices
    assert listed(bob) == {bobs}
    hers = next(iter(alices))
    for method, path, body in [("GET", "/", None), ("DELETE", "/", None), *ENDPOINTS]:
        response = api(server, bob.key, method, f"/sessions/{hers}{path}", json=body)
        assert response.status_code == 404 and error_code(response) == "session_not_found", (method, path)
    assert VideoSession.objects.get(pk=hers).status == "ready"


def test_two_handshakes_racing_with_one_ticket_let_one_in(alice, monkeypatch) -> None:
    """Both handshakes read the ticket before either deletes it (a barrier makes the race certain):
    only the one whose delete removed it gets in."""
    import threading

    from django.core.cache import cache

    from sessions import consumers

    ticket, session_id = "race-ticket", "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    cache.set(consumers.ticket_cache_key(ticket), {"user_id": alice.user.pk, "session_id": session_id}, 60)
    both_read = threading.Barrier(2)

    class ReadThenWait:  # the real cache, each read held until the other handshake has read too
        def get(self, key: str) -> object:
            value = cache.get(key)
            both_read.wait(timeout=10)
            return value

        def delete(self, key: str) -> bool:
            return cache.delete(key)

    monkeypatch.setattr(consumers, "cache", ReadThenWait())
    admitted: list[object] = []
    handshakes = [threading.Thread(target=lambda: admitted.append(consumers._redeem_ticket.func(ticket, session_id))) for _ in range(2)]
    for handshake in handshakes:
        handshake.start()
    for handshake in handshakes:
        handshake.join(timeout=20)
    assert sorted(user is not None for user in admitted) == [False, True]
