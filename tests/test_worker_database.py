"""A model worker whose database connections drop while it stores a propagation's frames (a
database restart or failover, a proxy cutting connections) loses no frame, and one whose database
stays unavailable for longer than its retries ends the propagation `failed`, naming what was not
stored, instead of `done`. A real worker and server; Postgres ends the worker's connections
(pg_terminate_backend) or a test transaction holds the frame table's lock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from tests.conftest import Workers, _test_database_url, launch_workers
from tests.test_sessions import api, open_session, propagation_finished, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
FRAMES = 60
STORED = "SELECT count(*) FROM video_sessions_frameresult WHERE session_id = %s"
WORKERS_CONNECTIONS = "FROM pg_stat_activity WHERE application_name = %s"
IN_A_LOCK_WAIT = f"{WORKERS_CONNECTIONS} AND wait_event_type = 'Lock'"


@pytest.fixture
def worker(tiny_checkpoint, tmp_path) -> Iterator[tuple[Workers, str]]:
    """A model worker, and the name its database connections carry in pg_stat_activity."""
    name = f"sam3-worker-{time.monotonic_ns()}"
    workers = launch_workers(tmp_path, tiny_checkpoint, DATABASE_URL=f"{_test_database_url()}?application_name={name}")
    yield workers, name
    workers.stop()


def database() -> psycopg.Connection:
    return psycopg.connect(_test_database_url().replace("postgres://", "postgresql://"))


def count(connection: psycopg.Connection, query: str, parameter: str) -> int:
    row = connection.execute(query, [parameter]).fetchone()
    return int(row[0]) if row else 0


def when_stored(admin: psycopg.Connection, session_id: str, frames: int) -> None:
    wait_for(lambda: count(admin, STORED, session_id) >= frames, timeout=60, every=0.02)


def prompted_session(server, alice) -> str:
    session_id = open_session(server, alice, frames=FRAMES)
    for prompt in ({"frame": 0, "text": "dog"}, {"frame": 0, "points": [[32, 24]]}):
        assert api(server, alice.key, "POST", f"/sessions/{session_id}/prompts/", json=prompt).status_code == 200
    return session_id


def propagated(server, alice, session_id: str, during: Callable[[], None]) -> dict:
    """Propagate forward with ``during`` running beside it; the propagation record once it has ended."""
    failures: list[BaseException] = []

    def beside() -> None:
        try:
            during()
        except BaseException as failure:  # noqa: BLE001 - reported by the test, not lost in a thread
            failures.append(failure)

    thread = threading.Thread(target=beside)
    thread.start()
    try:
        assert api(server, alice.key, "POST", f"/sessions/{session_id}/propagate/", json={"direction": "forward"}).status_code == 202
        finished = wait_for(lambda: propagation_finished(server, alice.key, session_id), timeout=120)
    finally:
        thread.join()
    if failures:
        raise failures[0]
    return finished["propagation"]


def stored_frames(server, alice, session_id: str) -> list[int]:
    results = api(server, alice.key, "GET", f"/sessions/{session_id}/frames/?limit=500").json()["results"]
    return [frame["frame"] for frame in results]


def test_a_propagation_keeps_every_frame_when_the_workers_database_connections_drop(start_server, worker, alice) -> None:
    workers, name = worker
    server = start_server()
    session_id = prompted_session(server, alice)
    terminated: list[int] = []  # connections ended at each drop

    def drop_the_workers_connections() -> None:
        """Twice all of them (idle in the worker's pool or not), then the one inside a frame write."""
        with database() as admin:
            admin.autocommit = True
            for stored_before_drop in (10, 25):
                when_stored(admin, session_id, stored_before_drop)
                terminated.append(count(admin, f"SELECT count(pg_terminate_backend(pid)) {WORKERS_CONNECTIONS}", name))
            when_stored(admin, session_id, 40)
            with database() as blocker:  # a transaction: the lock stays until the rollback
                blocker.execute("LOCK TABLE video_sessions_frameresult IN EXCLUSIVE MODE")
                wait_for(lambda: count(admin, f"SELECT count(*) {IN_A_LOCK_WAIT}", name), timeout=30, every=0.02)
                terminated.append(count(admin, f"SELECT count(pg_terminate_backend(pid)) {IN_A_LOCK_WAIT}", name))
                blocker.rollback()

    propagation = propagated(server, alice, session_id, during=drop_the_workers_connections)
    assert len(terminated) == 3 and all(terminated), terminated  # three drops, each of live connections
    assert "Session write failed, trying again" in workers.log()  # the write cut off inside its transaction
    assert (propagation["state"], propagation["frames_done"]) == ("done", FRAMES), propagation
    assert stored_frames(server, alice, session_id) == list(range(FRAMES))


def test_a_frame_the_worker_could_not_store_fails_the_propagation(start_server, worker, alice) -> None:
    """The frame table stays locked for longer than the worker's three tries of a write (each waits
    at most its 2 s lock_timeout): the frame being written is lost, and the propagation says so."""
    workers, _ = worker
    server = start_server()
    session_id = prompted_session(server, alice)

    def lock_the_frames_for_a_while() -> None:
        with database() as admin, database() as blocker:
            admin.autocommit = True
            when_stored(admin, session_id, 20)
            blocker.execute("LOCK TABLE video_sessions_frameresult IN EXCLUSIVE MODE")
            time.sleep(9)
            blocker.rollback()

    propagation = propagated(server, alice, session_id, during=lock_the_frames_for_a_while)
    stored = stored_frames(server, alice, session_id)
    unstored = sorted(set(range(FRAMES)) - set(stored))
    assert unstored and len(unstored) <= 2, unstored  # the write that waited out its tries (and perhaps the next)
    assert propagation["state"] == "failed" and propagation["frames_done"] == FRAMES, propagation
    assert f"could not be stored (the first: frame {unstored[0]};" in propagation["error"]
    assert workers.log().count("Session write failed, trying again") >= 2
