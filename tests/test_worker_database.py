"""A model worker whose database connections drop while it stores a propagation's frames (a
database restart or failover, a proxy cutting connections) loses no frame and does not leave the
session propagating: a real worker and server; while the frames are being stored, Postgres ends
all the worker's connections twice (pg_terminate_backend), then the one inside a frame write."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from tests.conftest import _test_database_url, launch_workers
from tests.test_sessions import api, open_session, propagation_finished, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
FRAMES = 60
STORED = "SELECT count(*) FROM video_sessions_frameresult WHERE session_id = %s"
WORKERS_CONNECTIONS = "FROM pg_stat_activity WHERE application_name = %s"
IN_A_LOCK_WAIT = f"{WORKERS_CONNECTIONS} AND wait_event_type = 'Lock'"


def _count(connection: psycopg.Connection, query: str, parameter: str) -> int:
    row = connection.execute(query, [parameter]).fetchone()
    return int(row[0]) if row else 0


def test_a_propagation_keeps_every_frame_when_the_workers_database_connections_drop(
    start_server, tiny_checkpoint, tmp_path, alice,
) -> None:
    name = f"sam3-worker-{time.monotonic_ns()}"  # the worker's connections, as pg_stat_activity names them
    workers = launch_workers(tmp_path, tiny_checkpoint, DATABASE_URL=f"{_test_database_url()}?application_name={name}")
    database = _test_database_url().replace("postgres://", "postgresql://")
    terminated: list[int] = []  # connections ended at each drop
    stop = threading.Event()

    def drop_the_workers_connections(session_id: str) -> None:
        """Twice all of them (idle in the worker's pool or not), then the one inside a frame write."""
        with psycopg.connect(database, autocommit=True) as admin:
            for stored_before_drop in (10, 25, 40):
                while not stop.wait(0.02) and _count(admin, STORED, session_id) < stored_before_drop:
                    pass
                if stop.is_set():
                    return
                if stored_before_drop < 40:
                    terminated.append(_count(admin, f"SELECT count(pg_terminate_backend(pid)) {WORKERS_CONNECTIONS}", name))
                    continue
                with psycopg.connect(database) as blocker:  # a transaction: the lock stays until the rollback
                    blocker.execute("LOCK TABLE video_sessions_frameresult IN EXCLUSIVE MODE")
                    wait_for(lambda: _count(admin, f"SELECT count(*) {IN_A_LOCK_WAIT}", name), timeout=30, every=0.02)
                    terminated.append(_count(admin, f"SELECT count(pg_terminate_backend(pid)) {IN_A_LOCK_WAIT}", name))
                    blocker.rollback()

    dropper: threading.Thread | None = None
    try:
        server = start_server()
        session_id = open_session(server, alice, frames=FRAMES)
        for prompt in ({"frame": 0, "text": "dog"}, {"frame": 0, "points": [[32, 24]]}):
            assert api(server, alice.key, "POST", f"/sessions/{session_id}/prompts/", json=prompt).status_code == 200
        dropper = threading.Thread(target=drop_the_workers_connections, args=(session_id,))
        dropper.start()
        assert api(server, alice.key, "POST", f"/sessions/{session_id}/propagate/", json={"direction": "forward"}).status_code == 202
        finished = wait_for(lambda: propagation_finished(server, alice.key, session_id), timeout=120)
    finally:
        stop.set()
        if dropper is not None:
            dropper.join()
        workers.stop()

    assert len(terminated) == 3 and all(terminated), terminated  # three drops, each of live connections
    assert "Session write failed, trying again" in workers.log()  # the write cut off inside its transaction
    propagation = finished["propagation"]
    assert (propagation["state"], propagation["frames_done"]) == ("done", FRAMES), propagation
    stored = api(server, alice.key, "GET", f"/sessions/{session_id}/frames/?limit=500").json()["results"]
    assert [frame["frame"] for frame in stored] == list(range(FRAMES))
