"""Races on a session's status, through real processes: cancel and close at the same moment, close
after a cancel and the other way round, and closing a session whose worker was just killed (kill -9)
or that is being rebuilt on another worker. Close is final in every order.

The worker-loss tests come first: they start their own two workers, and the module's shared
``model_worker`` (started by the first test that asks for it) must not be running beside them."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from django.conf import settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from sam3site.config import Config
from sessions.consumers import SESSION_ENDED_CLOSE_CODE
from sessions.models import FrameResult, VideoSession
from tests.conftest import launch_workers, read_registry
from tests.test_sessions import api, live_sessions_in_worker, open_session, wait_for
from tests.test_sessions_hardening import error_code, post, socket_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
FRAMES = 120  # long enough that a propagation is still running when the race starts
HEARTBEAT_TIMEOUT = Config.model_fields["worker_heartbeat_timeout_seconds"].default
# What POST /cancel/ may answer when a close races it: accepted, nothing running any more, or gone.
CANCEL_ANSWERS = {202: None, 409: "not_propagating", 410: "session_closed"}


@pytest.fixture
def server(start_server, model_worker):
    return start_server()


def propagating(server, client, *, frames: int = FRAMES) -> str:
    """An open session whose propagation is running and has stored a few frames."""
    session_id = open_session(server, client, frames=frames)
    assert post(server, client, session_id, "/prompts/", {"frame": 0, "points": [[20, 20]]}).status_code == 200
    assert post(server, client, session_id, "/propagate/").status_code == 202
    wait_for(lambda: FrameResult.objects.filter(session_id=session_id).count() >= 3, every=0.05)
    return session_id


def events_until_closed(socket: ClientConnection) -> list[dict]:
    """Every event left on the socket, up to the server closing it (which must happen)."""
    events: list[dict] = []
    with pytest.raises(ConnectionClosed):
        while True:
            events.append(json.loads(socket.recv(timeout=30)))
    return events


def assert_closed_for_good(session_id: str) -> VideoSession:
    """Closed, the propagation stopped as cancelled, and nothing of its results left, even late."""
    ended = wait_for(lambda: (s := VideoSession.objects.get(pk=session_id)).propagation.get("state") != "running" and s)
    assert ended.propagation["state"] == "cancelled" and ended.propagation["last_frame"] < FRAMES - 1
    time.sleep(1)  # a late writer (the propagation's end, a queued frame) would have written by now
    session = VideoSession.objects.get(pk=session_id)
    assert session.status == "closed"
    assert not FrameResult.objects.filter(session_id=session_id).exists()
    assert not (Path(settings.OUTPUT_DIR) / "sessions" / session_id).exists()
    return session


# --- a worker lost while its session is closed or rebuilt ---

def kill_worker_of(session_id: str) -> str:
    worker = VideoSession.objects.get(pk=session_id).worker
    os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)
    return worker


def test_close_right_after_the_worker_is_killed_is_prompt_and_final(start_server, tiny_checkpoint, tmp_path, alice) -> None:
    workers = launch_workers(
        tmp_path, tiny_checkpoint, devices=("cpu", "cpu"), WORKER_HEARTBEAT_TIMEOUT_SECONDS=str(HEARTBEAT_TIMEOUT)
    )
    try:
        server = start_server()
        session_id = propagating(server, alice)
        dead = kill_worker_of(session_id)
        started = time.monotonic()
        closed = api(server, alice.key, "DELETE", f"/sessions/{session_id}/")
        took = time.monotonic() - started
        assert closed.status_code == 204, closed.text
        # The worker still looks alive (its last heartbeat is fresh), but the web must not wait
        # long for an answer that cannot come: the record is what matters.
        assert took < 10, f"DELETE took {took:.1f}s"
        assert VideoSession.objects.get(pk=session_id).status == "closed"

        # Past the heartbeat timeout the surviving worker's watchdog sees the dead worker, and
        # must not claim (resurrect) the closed session.
        wait_for(lambda: dead not in {w.name for w in read_registry()}, timeout=HEARTBEAT_TIMEOUT + 5)
        time.sleep(3)
        session = VideoSession.objects.get(pk=session_id)
        assert session.status == "closed" and session.worker == dead
        assert not FrameResult.objects.filter(session_id=session_id).exists()
        assert live_sessions_in_worker() == 0  # the survivor (and a restarted worker) hold nothing
        assert "rebuilding session" not in workers.log()
    finally:
        workers.stop()


def test_a_session_closed_while_being_rebuilt_stays_closed(start_server, tiny_checkpoint, tmp_path, alice) -> None:
    workers = launch_workers(
        tmp_path, tiny_checkpoint, devices=("cpu", "cpu"), WORKER_HEARTBEAT_TIMEOUT_SECONDS=str(HEARTBEAT_TIMEOUT)
    )
    try:
        server = start_server()
        session_id = open_session(server, alice, frames=60)
        # A long prompt log, so that replaying it takes a while: the close lands in the middle.
        for frame in range(0, 60, 3):
            assert post(server, alice, session_id, "/prompts/", {"frame": frame, "points": [[20, 20]]}).status_code == 200
        with socket_for(server, alice, session_id) as socket:
            dead = kill_worker_of(session_id)
            while (event := json.loads(socket.recv(timeout=HEARTBEAT_TIMEOUT + 10)))["type"] != "status":
                pass
            assert event["status"] == "recovering", event
            assert VideoSession.objects.get(pk=session_id).status == "recovering"
            started = time.monotonic()
            assert api(server, alice.key, "DELETE", f"/sessions/{session_id}/").status_code == 204
            assert time.monotonic() - started < 10
            events = events_until_closed(socket)
        assert socket.close_code == SESSION_ENDED_CLOSE_CODE
        assert {"type": "status", "status": "closed"} in events
        assert not [e for e in events if e.get("status") == "ready"], events  # the rebuild did not reopen it
        assert "could not be rebuilt" not in workers.log()
        # The rebuild finishes, finds the session closed, and lets its state go.
        wait_for(lambda: f"Session {session_id} ended while being rebuilt" in workers.log(), timeout=60)
        time.sleep(1)
        session = VideoSession.objects.get(pk=session_id)
        assert session.status == "closed" and session.worker != dead  # claimed, then closed: closed stays
        wait_for(lambda: live_sessions_in_worker() == 0, timeout=30)
    finally:
        workers.stop()


# --- cancel and close of a running propagation, in every order ---

def test_cancel_and_close_at_the_same_moment(server, alice) -> None:
    for _ in range(3):
        session_id = propagating(server, alice)
        held = live_sessions_in_worker()
        with socket_for(server, alice, session_id) as socket:
            barrier = threading.Barrier(2)

            def at_once(method: str, path: str, session_id: str = session_id, barrier: threading.Barrier = barrier):
                barrier.wait()
                return api(server, alice.key, method, f"/sessions/{session_id}{path}")

            with ThreadPoolExecutor(2) as pool:
                cancel = pool.submit(at_once, "POST", "/cancel/")
                close = pool.submit(at_once, "DELETE", "/")
                cancelled, closed = cancel.result(), close.result()
            assert closed.status_code == 204, closed.text
            assert cancelled.status_code in CANCEL_ANSWERS, cancelled.text
            if CANCEL_ANSWERS[cancelled.status_code] is not None:
                assert error_code(cancelled) == CANCEL_ANSWERS[cancelled.status_code]
            events = events_until_closed(socket)
        assert socket.close_code == SESSION_ENDED_CLOSE_CODE
        assert events[-1] == {"type": "status", "status": "closed"}
        assert_closed_for_good(session_id)
        wait_for(lambda held=held: live_sessions_in_worker() == held - 1)


def test_cancel_after_close_is_gone(server, alice) -> None:
    session_id = propagating(server, alice)
    assert api(server, alice.key, "DELETE", f"/sessions/{session_id}/").status_code == 204
    refused = post(server, alice, session_id, "/cancel/")
    assert refused.status_code == 410 and error_code(refused) == "session_closed"
    assert_closed_for_good(session_id)


def test_close_right_after_cancel_wins(server, alice) -> None:
    session_id = propagating(server, alice)
    held = live_sessions_in_worker()
    with socket_for(server, alice, session_id) as socket:
        assert post(server, alice, session_id, "/cancel/").status_code == 202
        assert api(server, alice.key, "DELETE", f"/sessions/{session_id}/").status_code == 204
        events = events_until_closed(socket)
    assert socket.close_code == SESSION_ENDED_CLOSE_CODE
    assert events[-1] == {"type": "status", "status": "closed"}
    assert_closed_for_good(session_id)
    assert api(server, alice.key, "GET", f"/sessions/{session_id}/").json()["status"] == "closed"
    wait_for(lambda: live_sessions_in_worker() == held - 1)
