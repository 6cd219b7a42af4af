"""A worker that was replaced never writes again (issue 20): two real model workers, the session's
worker paused with SIGSTOP mid-propagation (or inside a frame write, holding the session row's
lock), or cut off by a network partition (its own network namespace, its link cut), the other one
claims the session, the client goes on with it, then the old worker is resumed or reconnected.

After recovery: no frame delivered twice, storage equal to what the new owner delivered, the old
worker holds no state of the session and says so in its log. Also: the claim is not held up by
the paused worker's lock for longer than the bound the workers' database settings give.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import numpy as np
import psycopg
import pytest
from django.conf import settings
from django.db import connection
from websockets.sync.client import ClientConnection, connect

from inference.masks import decode_rle
from sessions.models import VideoSession
from tests.conftest import Workers, _test_database_url, launch_workers, read_registry
from tests.netns import namespaces_available, partitionable_host
from tests.test_sessions import api, open_session, propagation_finished, wait_for, ws_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
FRAMES = 160


@pytest.fixture
def two_workers(tiny_checkpoint, tmp_path) -> Iterator[Workers]:
    workers = launch_workers(tmp_path, tiny_checkpoint, devices=("cpu", "cpu"))
    yield workers
    for name in workers.names:  # a test that fails while a worker is stopped must not leave it stopped
        os.kill(int(name.rsplit(":", 1)[1]), signal.SIGCONT)
    workers.stop()


def worker_pid(session_id: str) -> int:
    return int(VideoSession.objects.get(pk=session_id).worker.rsplit(":", 1)[1])


def until(socket: ClientConnection, predicate, log: list[dict], timeout: float = 60) -> dict:
    """Read messages (kept in ``log``) until one satisfies ``predicate``."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(socket.recv(timeout=max(0.1, deadline - time.monotonic())))
        log.append(message)
        if message["type"] == "frame":
            socket.send('{"type": "ack"}')  # as clients do: every frame then carries its masks
        if predicate(message):
            return message


def stop_inside_a_frame_write(pid: int, session_id: str) -> None:
    """Pause the worker while its writer is inside frame_result_store's transaction, holding the
    session row's lock: the test locks the frame index table, waits until the worker's write
    blocks on it, stops the worker, then lets the table go (the stopped worker keeps its row lock)."""
    with psycopg.connect(_test_database_url(), autocommit=False) as blocker:
        blocker.execute("LOCK TABLE video_sessions_frameresult IN EXCLUSIVE MODE")
        with psycopg.connect(_test_database_url(), autocommit=True) as observer:
            wait_for(lambda: observer.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE '%video_sessions_frameresult%'"
            ).fetchone()[0] > 0, timeout=30, every=0.02)
        os.kill(pid, signal.SIGSTOP)
        blocker.rollback()


def takeover(
    server, alice, session_id: str, interrupt: Callable[[], None], resume: Callable[[], None], old_log: Callable[[], str]
) -> float:
    """The issue's reproduction: text + click, propagate; after 15 frames ``interrupt`` the session's
    worker; once another worker has claimed it, click again and propagate; ``resume`` the old worker
    mid-way. Checks what must hold after recovery; returns the seconds from interrupt to takeover."""
    assert api(server, alice.key, "POST", f"/sessions/{session_id}/prompts/", json={"frame": 0, "text": "dog"}).status_code == 200
    clicked = api(server, alice.key, "POST", f"/sessions/{session_id}/prompts/", json={"frame": 0, "points": [[32, 24]]})
    assert clicked.status_code == 200, clicked.text
    log: list[dict] = []
    with connect(ws_url(server, session_id), additional_headers={"X-API-Key": alice.key}, open_timeout=10) as socket:
        until(socket, lambda m: m["type"] == "status", log)
        socket.send(json.dumps({"type": "propagate", "direction": "forward"}))
        until(socket, lambda m: m["type"] == "frame" and m["frame"] >= 15, log)
        old_worker = VideoSession.objects.get(pk=session_id).worker
        interrupt()
        interrupted_at = time.monotonic()
        until(socket, lambda m: m["type"] == "status" and m["status"] == "ready" and m.get("recovered"), log, timeout=90)
        taken_over_in = time.monotonic() - interrupted_at
        recovered_at = len(log)
        assert VideoSession.objects.get(pk=session_id).worker != old_worker

        again = api(server, alice.key, "POST", f"/sessions/{session_id}/prompts/", json={"frame": 0, "points": [[10, 10]]})
        assert again.status_code == 200, again.text
        assert api(server, alice.key, "POST", f"/sessions/{session_id}/propagate/", json={"direction": "forward"}).status_code == 202
        until(socket, lambda m: m["type"] == "frame", log)
        resume()  # the old worker comes back mid-way through the new propagation
        until(socket, lambda m: m["type"] in ("done", "error", "cancelled"), log, timeout=120)
        assert log[-1]["type"] == "done", log[-1]
        with pytest.raises(TimeoutError):  # nothing from the old worker afterwards either
            until(socket, lambda m: m["type"] in ("frame", "progress", "done"), log, timeout=3)

    after = log[recovered_at:]
    delivered = [m for m in after if m["type"] == "frame"]
    assert [m["frame"] for m in delivered] == list(range(FRAMES))  # each frame once, in order, none stale
    progress = [m["frames_done"] for m in after if m["type"] == "progress"]
    assert progress == sorted(progress)  # one propagation's progress, not two interleaved
    stored = api(server, alice.key, "GET", f"/sessions/{session_id}/frames/?limit=500").json()["results"]
    assert [f["frame"] for f in stored] == list(range(FRAMES))
    for kept, sent in zip(stored, delivered):  # storage holds exactly what the new owner delivered
        assert [o["id"] for o in kept["objects"]] == [o["id"] for o in sent["objects"]]
        for a, b in zip(kept["objects"], sent["objects"]):
            assert np.array_equal(decode_rle(a["mask"]), decode_rle(b["mask"])), kept["frame"]
    assert propagation_finished(server, alice.key, session_id)["propagation"]["state"] == "done"

    # The old worker let the session go (its heartbeat reports no session), and said so once.
    wait_for(lambda: any(w.name == old_worker and w.sessions == 0 for w in read_registry()), timeout=60)
    assert old_log().count(f"Session {session_id} was taken over by another worker") == 1
    assert VideoSession.objects.get(pk=session_id).owner_epoch == 2
    return taken_over_in


@pytest.mark.parametrize("pause", ["between_frames", "inside_a_frame_write"])
def test_a_paused_worker_never_writes_again_after_another_claims_its_session(
    start_server, two_workers, alice, pause: str
) -> None:
    server = start_server()
    session_id = open_session(server, alice, frames=FRAMES)

    def interrupt() -> None:
        pid = worker_pid(session_id)
        interrupt.pid = pid  # type: ignore[attr-defined]
        if pause == "inside_a_frame_write":
            stop_inside_a_frame_write(pid, session_id)
        else:
            os.kill(pid, signal.SIGSTOP)

    taken_over_in = takeover(
        server, alice, session_id, interrupt, lambda: os.kill(interrupt.pid, signal.SIGCONT), two_workers.log  # type: ignore[attr-defined]
    )
    print(f"\npause {pause}: session taken over {taken_over_in:.1f} s after the pause")
    connection.close()


@pytest.mark.skipif(bool(why_not := namespaces_available()), reason=f"no partition test here: {why_not}")
def test_a_worker_cut_off_by_a_partition_never_writes_again(start_server, tiny_checkpoint, tmp_path, alice) -> None:
    """The worker runs in its own network namespace, reaching Postgres and Redis over a veth link;
    the link is cut mid-propagation (connections stay open and silent) and restored later."""
    database, redis_url = urlsplit(_test_database_url()), urlsplit(settings.REDIS_URL)
    with partitionable_host((database.port or 5432, redis_url.port or 6379)) as host:
        remote = launch_workers(
            tmp_path, tiny_checkpoint, prefix=tuple(host.command_prefix),
            DATABASE_URL=database._replace(netloc=f"{database.username or 'postgres'}@{host.address}:{database.port or 5432}").geturl(),
            REDIS_URL=redis_url._replace(netloc=f"{host.address}:{redis_url.port or 6379}").geturl(),
        )
        local = None
        try:
            server = start_server()
            session_id = open_session(server, alice, frames=FRAMES)  # on the only worker: the one behind the link
            assert VideoSession.objects.get(pk=session_id).worker in remote.names
            local = launch_workers(tmp_path, tiny_checkpoint, alongside=True)
            taken_over_in = takeover(server, alice, session_id, host.cut, host.restore, remote.log)
            print(f"\npartition: session taken over {taken_over_in:.1f} s after the cut")
        finally:
            host.restore()
            for workers in (remote, local):
                if workers is not None:
                    workers.stop()
    connection.close()
