"""Model worker processes: readiness, failures with reasons, two workers with cache affinity,
and the embedded one-process mode."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from PIL import Image

from tests.conftest import launch_workers, read_registry

pytestmark = pytest.mark.django_db
SEGMENT = "/api/v1/segment/"


def photo(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def upload(client, seed: int) -> str:
    return client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("p.png", photo(seed))}, format="multipart").json()["id"]


def test_no_worker_means_not_ready_and_503(alice) -> None:
    import redis
    from django.conf import settings

    from inference import registry

    redis.Redis.from_url(settings.REDIS_URL).delete(registry.WORKERS_KEY)
    ready = Client().get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["model"]["reason"] == "no model worker is running"
    response = alice.client.post(SEGMENT, {"image": upload(alice.client, 1), "prompts": [{"text": "dog"}]}, format="json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_unavailable"


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_worker_with_bad_weights_reports_the_reason(damage: str, tiny_checkpoint: Path, tmp_path: Path, alice) -> None:
    checkpoint = tmp_path / "weights"
    if damage == "corrupt":
        shutil.copytree(tiny_checkpoint, checkpoint)
        (checkpoint / "model.safetensors").write_bytes(b"\x00garbage" * 100)
    workers = launch_workers(tmp_path, checkpoint / "sam3.pt", wait_for="settled")
    try:
        (worker,) = read_registry()
        assert worker.state == "failed"
        if damage == "missing":
            assert "does not exist" in worker.reason or "not found" in worker.reason.lower()
        else:
            assert "safetensors" in worker.reason
        ready = Client().get("/readyz").json()
        assert ready["status"] == "not_ready"
        assert worker.reason in ready["checks"]["model"]["reason"]
        response = alice.client.post(SEGMENT, {"image": upload(alice.client, 2), "prompts": [{"text": "dog"}]}, format="json")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "model_unavailable"
        assert worker.reason in response.json()["error"]["message"]
    finally:
        workers.stop()


def test_two_workers_share_the_load_and_keep_cache_affinity(tiny_checkpoint: Path, tmp_path: Path, alice) -> None:
    workers = launch_workers(tmp_path, tiny_checkpoint, devices=("cpu", "cpu"))
    try:
        assert len(workers.names) == 2
        served_by: dict[str, set[str]] = {}
        # Rendezvous hashing puts 8 images on one worker in 0.8 % of runs: go on (up to 24 images,
        # 2^-23 odds) until both workers have been chosen.
        for seed in range(24):
            if len(served_by) >= 8 and len(set().union(*served_by.values())) == 2:
                break
            image_id = upload(alice.client, 100 + seed)
            first, second = (
                alice.client.post(SEGMENT, {"image": image_id, "prompts": [{"text": "dog"}]}, format="json").json()
                for _ in range(2)
            )
            assert (first["cache_hit"], second["cache_hit"]) == (False, True)
            served_by[image_id] = {first["worker"], second["worker"]}
        assert all(len(names) == 1 for names in served_by.values())  # each image always on the same worker
        assert set().union(*served_by.values()) == set(workers.names)  # and both workers got images
        ready = Client().get("/readyz").json()
        assert ready["checks"]["model"]["ready_workers"] == 2
    finally:
        workers.stop()
    assert read_registry() == []  # a stopped worker withdraws at once


@pytest.mark.slow
def test_embedded_mode_serves_segmentation_in_one_process(start_server, tiny_checkpoint: Path, tmp_path: Path) -> None:
    server = start_server(
        DATABASE_URL="", REDIS_URL="", DATA_DIR=str(tmp_path / "var"), SAM3_CHECKPOINT=str(tiny_checkpoint),
    )
    import time

    deadline = time.monotonic() + 60
    while (ready := requests.get(f"{server.url}/readyz", timeout=10)).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["model"]["model"]["tiny_random"] is True
    response = requests.post(
        f"{server.url}{SEGMENT}", files={"file": ("a.png", photo(7))},
        data={"prompts": '[{"text": "dog"}, {"points": [[10, 10]]}]', "threshold": "0"}, timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["worker"].startswith("embedded@")
    assert len(body["results"]) == 2 and body["results"][0]["instances"]
    assert "meaningless" in body["model"]["warning"]
    assert "tiny random-weight SAM3 is loaded" in server.log()


@pytest.mark.slow
def test_embedded_quick_start_writes_the_tiny_model_when_weights_are_missing(start_server, tmp_path: Path) -> None:
    server = start_server(DATABASE_URL="", REDIS_URL="", DATA_DIR=str(tmp_path / "var"), SAM3_CHECKPOINT=str(tmp_path / "none"))
    import time

    deadline = time.monotonic() + 60
    while requests.get(f"{server.url}/readyz", timeout=10).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert (tmp_path / "var" / "tiny-sam3" / "config.json").exists()
    response = requests.post(
        f"{server.url}{SEGMENT}", files={"file": ("a.png", photo(8))}, data={"prompts": '[{"text": "bus"}]'}, timeout=60
    )
    assert response.status_code == 200 and response.json()["model"]["tiny_random"] is True


def test_video_model_required_stops_the_workers_when_the_model_cannot_load(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT, free_port

    env = {
        **os.environ, "SAM3_CHECKPOINT": str(tmp_path / "missing"), "VIDEO_MODEL_REQUIRED": "true",
        "IMAGE_MODEL_DEVICE": "cpu", "WORKER_METRICS_PORT": str(free_port()),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "run_workers"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 78
    assert "VIDEO_MODEL_REQUIRED is set and the model did not load" in result.stderr


def test_image_model_disabled_answers_503(alice, monkeypatch) -> None:
    from django.conf import settings

    monkeypatch.setattr(settings.CONFIG, "image_model_enabled", False)
    response = alice.client.post(SEGMENT, {"image": upload(alice.client, 9), "prompts": [{"text": "dog"}]}, format="json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "image_disabled"


def test_video_model_disabled_refuses_sessions(alice, monkeypatch) -> None:
    from django.conf import settings

    from tests.conftest import mp4_bytes

    monkeypatch.setattr(settings.CONFIG, "video_model_enabled", False)
    video = alice.client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("v.mp4", mp4_bytes())}, format="multipart").json()["id"]
    response = alice.client.post("/api/v1/sessions/", {"video": video}, format="json")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "video_disabled"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)  # the request runs on another thread, with its own connection
def test_worker_dying_during_an_image_request_answers_within_the_deadline(
    tiny_checkpoint: Path, tmp_path: Path, alice, monkeypatch
) -> None:
    """kill -9 of the worker holding a request: the client gets 503/504 by the deadline, never a hang."""
    import os
    import signal
    import threading
    import time

    from django.conf import settings

    workers = launch_workers(tmp_path, tiny_checkpoint)
    try:
        image_id = upload(alice.client, 7)
        queue = read_registry()[0].queue
        celery_pids = [int(pid) for pid in os.popen(f"pgrep -f 'celery.*-Q {queue}'").read().split()]
        assert celery_pids
        for pid in celery_pids:
            os.kill(pid, signal.SIGSTOP)  # the request will be in the worker's hands when it dies
        monkeypatch.setattr(settings.CONFIG, "inference_timeout_seconds", 6.0)
        answer: dict[str, object] = {}

        def ask() -> None:
            started = time.monotonic()
            response = alice.client.post(SEGMENT, {"image": image_id, "prompts": [{"text": "dog"}]}, format="json")
            answer.update(status=response.status_code, code=response.json()["error"]["code"], seconds=time.monotonic() - started)

        asking = threading.Thread(target=ask)
        asking.start()
        time.sleep(1.0)
        for pid in celery_pids:
            os.kill(pid, signal.SIGKILL)
        asking.join(timeout=30)
        assert not asking.is_alive(), "the request hung after its worker died"
        assert answer["status"] in (503, 504), answer
        assert answer["code"] in ("deadline_exceeded", "model_unavailable", "worker_lost"), answer
        assert answer["seconds"] < 6.0 + 3.0, answer
    finally:
        workers.stop()
