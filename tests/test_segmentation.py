"""Image segmentation through the real path: web -> Redis -> a Celery model worker process -> model
-> encoding -> web, compared bit for bit with the same tiny SAM3 called in this process."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from inference.masks import decode_rle
from inference.runtime.engine import compute_image_features, segment_concept, segment_interactive
from inference.runtime.loader import load_sam3
from tests.conftest import mp4_bytes

pytestmark = pytest.mark.django_db
SEGMENT = "/api/v1/segment/"
LOW = 0.0  # random weights score low: a zero threshold makes instances appear


def photo(width: int = 160, height: int = 120, seed: int = 1) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def rgb(content: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(content)).convert("RGB"))


@pytest.fixture(scope="module")
def local_model(tiny_checkpoint: Path):
    return load_sam3(tiny_checkpoint, None, "cpu")


def upload_image(client, content: bytes) -> str:
    response = client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("p.png", content)}, format="multipart")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def segment(client, **body):
    return client.post(SEGMENT, body, format="json")


def masks_of(result: dict) -> np.ndarray:
    return np.stack([decode_rle(instance["mask"]) for instance in result["instances"]]) if result["instances"] else np.zeros((0,))


def test_text_prompt_matches_the_model_called_directly(model_worker, alice, local_model) -> None:
    content = photo()
    image_id = upload_image(alice.client, content)
    response = segment(alice.client, image=image_id, prompts=[{"text": "dog"}], threshold=LOW)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["image"] == {"sha256": hashlib.sha256(content).hexdigest(), "width": 160, "height": 120}
    assert body["model"]["tiny_random"] is True and "meaningless" in body["model"]["warning"]
    assert body["worker"] in model_worker.names
    assert set(body["timings_ms"]) == {"queued", "compute", "postprocess", "total"}
    served = body["results"][0]

    direct = segment_concept(local_model, compute_image_features(local_model, rgb(content)), text="dog", threshold=LOW)
    assert len(served["instances"]) == len(direct) > 0
    assert np.array_equal(masks_of(served), direct.masks.numpy())  # bit for bit
    assert [i["score"] for i in served["instances"]] == pytest.approx(direct.scores.tolist(), abs=1e-6)
    assert np.allclose([i["box"] for i in served["instances"]], direct.boxes.numpy(), atol=0.01)
    for instance in served["instances"]:
        assert instance["mask"]["size"] == [120, 160] and isinstance(instance["mask"]["counts"], str)


def test_box_point_and_mixed_prompts_in_one_request(model_worker, alice, local_model) -> None:
    content = photo(seed=2)
    prompts = [
        {"boxes": [[10, 10, 80, 60]], "box_labels": [1]},
        {"text": "cat", "boxes": [[20, 20, 100, 90], [5, 5, 30, 30]], "box_labels": [1, 0]},
        {"points": [[40, 50], [120, 90]], "point_labels": [1, 0]},
        {"box": [30, 30, 110, 100], "points": [[60, 60]]},
    ]
    response = segment(alice.client, image=upload_image(alice.client, content), prompts=prompts, threshold=LOW)
    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert [r["prompt"]["kind"] for r in results] == ["concept", "concept", "interactive", "interactive"]

    features = compute_image_features(local_model, rgb(content))
    expected = [
        segment_concept(local_model, features, text=None, boxes=[[10, 10, 80, 60]], box_labels=[1], threshold=LOW),
        segment_concept(local_model, features, text="cat", boxes=[[20, 20, 100, 90], [5, 5, 30, 30]], box_labels=[1, 0], threshold=LOW),
        segment_interactive(local_model, features, points=[[40, 50], [120, 90]], point_labels=[1, 0]),
        segment_interactive(local_model, features, points=[[60, 60]], box=[30, 30, 110, 100]),
    ]
    for served, direct in zip(results, expected, strict=True):
        assert np.array_equal(masks_of(served), direct.masks.numpy())
    assert len(results[2]["instances"]) == 1 and 0.0 <= results[2]["object_score"] <= 1.0


def test_inline_file_anonymous_and_other_mask_formats(model_worker, settings) -> None:
    from rest_framework.test import APIClient

    settings.REQUIRE_API_KEY = False
    content = photo(seed=3)
    client = APIClient()
    for mask_format in ("polygons", "png", "none"):
        response = client.post(
            SEGMENT,
            {"file": SimpleUploadedFile("x.bin", content), "prompts": json.dumps([{"text": "dog"}]),
             "threshold": "0", "mask_format": mask_format, "max_instances": "3"},
            format="multipart",
        )
        assert response.status_code == 200, response.json()
        instances = response.json()["results"][0]["instances"]
        assert 0 < len(instances) <= 3
        if mask_format == "png":
            import base64

            decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(instances[0]["mask"]))))
            assert decoded.shape == (120, 160) and set(np.unique(decoded)) <= {0, 255}
        elif mask_format == "polygons":
            assert all(len(ring) % 2 == 0 for component in instances[0]["mask"] for ring in component)
        else:
            assert instances[0]["mask"] is None
    assert not list((Path(settings.UPLOAD_DIR) / ".inline").glob("*"))  # inline images do not stay


def test_follow_up_prompt_hits_the_feature_cache(model_worker, alice) -> None:
    image_id = upload_image(alice.client, photo(seed=4))
    first = segment(alice.client, image=image_id, prompts=[{"text": "dog"}], threshold=LOW).json()
    second = segment(alice.client, image=image_id, prompts=[{"text": "dog"}], threshold=LOW).json()
    third = segment(alice.client, image=image_id, prompts=[{"points": [[10, 10]]}]).json()
    assert (first["cache_hit"], second["cache_hit"], third["cache_hit"]) == (False, True, True)
    assert first["results"] == second["results"]
    metrics = requests.get(f"{model_worker.metrics_url}/metrics", timeout=10).text
    assert 'sam3_feature_cache_lookups_total{result="hit"}' in metrics
    assert "sam3_inference_compute_seconds_count" in metrics
    assert "sam3_model_workers_up 1.0" in metrics


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"prompts": []}, 400, "invalid"),
        ({"prompts": [{"text": "dog"}] * 17}, 400, "invalid"),
        ({"prompts": [{"text": "   "}]}, 400, "invalid"),
        ({"prompts": [{"text": "dog", "points": [[1, 1]]}]}, 400, "invalid"),
        ({"prompts": [{}]}, 400, "invalid"),
        ({"prompts": [{"boxes": [[0, 0, 10]]}]}, 400, "invalid"),
        ({"prompts": [{"boxes": [[50, 50, 10, 10]]}]}, 400, "invalid"),
        ({"prompts": [{"boxes": [[0, 0, "ten", 10]]}]}, 400, "invalid"),
        ({"prompts": [{"points": [[1, 1]], "point_labels": [1, 0]}]}, 400, "invalid"),
        ({"prompts": [{"points": [[1, 1]], "point_labels": [7]}]}, 400, "invalid"),
        ({"prompts": [{"boxes": [[0, 0, 500, 50]]}]}, 400, "outside_image"),
        ({"prompts": [{"points": [[-1, 5]]}]}, 400, "outside_image"),
        ({"prompts": [{"text": "dog"}], "threshold": 2}, 400, "invalid"),
        ({"prompts": [{"text": "dog"}], "mask_format": "jpeg"}, 400, "invalid"),
        ({"prompts": "not a list"}, 400, "invalid"),
    ],
)
def test_bad_prompts_are_400_with_a_code(model_worker, alice, body: dict, status: int, code: str) -> None:
    image_id = upload_image(alice.client, photo(seed=5))
    response = segment(alice.client, image=image_id, **body)
    assert response.status_code == status, response.json()
    assert response.json()["error"]["code"] == code


def test_bad_image_references_and_files(model_worker, alice, bob) -> None:
    image_id = upload_image(alice.client, photo(seed=6))
    prompts = [{"text": "dog"}]
    assert segment(bob.client, image=image_id, prompts=prompts).json()["error"]["code"] == "upload_not_found"
    assert segment(alice.client, image="7c1e2a8e-0000-4000-8000-000000000000", prompts=prompts).status_code == 404
    video = alice.client.post("/api/v1/uploads/", {"file": SimpleUploadedFile("v.mp4", mp4_bytes())}, format="multipart")
    assert segment(alice.client, image=video.json()["id"], prompts=prompts).json()["error"]["code"] == "not_an_image"
    assert segment(alice.client, prompts=prompts).status_code == 400  # neither image nor file
    for content, code in ((b"", "empty_file"), (b"%PDF-1.4 not an image", "unsupported_media_type"), (photo()[:300], "corrupt_file")):
        response = alice.client.post(
            SEGMENT, {"file": SimpleUploadedFile("x.png", content), "prompts": json.dumps(prompts)}, format="multipart"
        )
        assert response.json()["error"]["code"] == code
    malformed = alice.client.post(SEGMENT, {"file": SimpleUploadedFile("x.png", photo()), "prompts": "[{"}, format="multipart")
    assert malformed.status_code == 400


def test_overload_answers_503_with_retry_after_at_once(model_worker, alice, monkeypatch) -> None:
    import redis
    from django.conf import settings

    from sam3site.redis_clients import inflight_key
    from tests.conftest import read_registry

    image_id = upload_image(alice.client, photo(seed=7))
    monkeypatch.setattr(settings.CONFIG, "inference_queue_limit", 2)
    queue = read_registry()[0].queue
    client = redis.Redis.from_url(settings.REDIS_URL)
    far = __import__("time").time() + 60
    client.zadd(inflight_key(queue), {"other-1": far, "other-2": far})  # two requests in hand
    try:
        refused = segment(alice.client, image=image_id, prompts=[{"text": "dog"}])
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "overloaded"
        assert int(refused["Retry-After"]) >= 1
    finally:
        client.delete(inflight_key(queue))
    assert segment(alice.client, image=image_id, prompts=[{"text": "dog"}]).status_code == 200


def test_concurrent_clients_are_all_served_or_told_to_retry(model_worker, start_server, alice) -> None:
    """Eight clients against a queue limit of 3: refused requests get 503 + Retry-After, and clients
    that honour it are all served in the end."""
    server = start_server(INFERENCE_QUEUE_LIMIT="3")
    image_ids = [upload_image(alice.client, photo(seed=20 + i)) for i in range(4)]
    outcomes: list[tuple[int, int, str | None, str | None]] = []  # (client, status, error code, Retry-After)

    def client(index: int) -> None:
        for round_ in range(3):
            give_up_at = time.monotonic() + 120
            while time.monotonic() < give_up_at:
                response = requests.post(
                    f"{server.url}{SEGMENT}", headers={"X-API-Key": alice.key}, timeout=60,
                    json={"image": image_ids[(index + round_) % 4], "prompts": [{"text": "dog"}] * 8, "threshold": LOW},
                )
                served = response.status_code == 200 and len(response.json()["results"]) == 8
                code = None if response.status_code == 200 else response.json()["error"]["code"]
                outcomes.append((index, 200 if served else response.status_code, code, response.headers.get("Retry-After")))
                if response.status_code != 503:
                    break
                time.sleep(min(float(response.headers.get("Retry-After", "1")), 0.5))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {status for _, status, _, _ in outcomes} <= {200, 503}
    assert sum(status == 200 for _, status, _, _ in outcomes) == 24  # every request served in the end
    refused = [(code, retry_after) for _, status, code, retry_after in outcomes if status == 503]
    assert refused, "eight clients on a queue limit of 3 should have met admission control"
    assert all(code == "overloaded" and retry_after and retry_after.isdigit() for code, retry_after in refused)


def test_expired_requests_are_dropped_not_computed(model_worker, alice, monkeypatch) -> None:
    import os
    import signal

    from django.conf import settings

    image_id = upload_image(alice.client, photo(seed=8))
    monkeypatch.setattr(settings.CONFIG, "inference_timeout_seconds", 1.0)

    def worker_metric(name: str) -> float:
        metrics = requests.get(f"{model_worker.metrics_url}/metrics", timeout=10).text
        line = next((line for line in metrics.splitlines() if line.startswith(name)), f"{name} 0")
        return float(line.split()[-1])

    before = worker_metric("sam3_inference_compute_seconds_count")
    celery_pids = [int(pid) for pid in os.popen(f"pgrep -f 'celery.*-Q {read_queue()}'").read().split()]
    for pid in celery_pids:
        os.kill(pid, signal.SIGSTOP)  # the worker hangs...
    try:
        response = segment(alice.client, image=image_id, prompts=[{"text": "dog"}])
    finally:
        for pid in celery_pids:
            os.kill(pid, signal.SIGCONT)  # ...and recovers after the deadline
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "deadline_exceeded"
    # Positive evidence however slow the machine: a later job on the same (FIFO) queue is answered only
    # after the worker has met the expired one; by then exactly one job — the later one — was computed.
    monkeypatch.setattr(settings.CONFIG, "inference_timeout_seconds", 120.0)
    assert segment(alice.client, image=image_id, prompts=[{"text": "dog"}]).status_code == 200
    assert worker_metric("sam3_inference_compute_seconds_count") == before + 1  # the expired job was dropped


def read_queue() -> str:
    from tests.conftest import read_registry

    return read_registry()[0].queue


def test_full_http_path_through_a_live_server(model_worker, start_server, alice, local_model) -> None:
    server = start_server()
    content = photo(seed=9)
    response = requests.post(
        f"{server.url}{SEGMENT}", headers={"X-API-Key": alice.key}, timeout=60,
        files={"file": ("a.png", content)}, data={"prompts": json.dumps([{"text": "dog"}]), "threshold": "0"},
    )
    assert response.status_code == 200, response.text
    direct = segment_concept(local_model, compute_image_features(local_model, rgb(content)), text="dog", threshold=LOW)
    assert np.array_equal(masks_of(response.json()["results"][0]), direct.masks.numpy())
    metrics = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
    assert 'sam3_inference_requests_total{endpoint="segment_image",outcome="ok"}' in metrics
    ready = requests.get(f"{server.url}/readyz", timeout=10).json()
    assert ready["checks"]["model"]["ready_workers"] == 1


def test_web_processes_do_not_load_the_model_code() -> None:
    """With separate workers the web process never imports torch or the model (only the embedded default does)."""
    import os
    import subprocess
    import sys

    code = (
        "import sam3site.asgi, sys; from django.urls import resolve; resolve('/api/v1/segment/'); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "sam3site.settings"}, timeout=60,
    )
    assert result.stdout.strip() == "[]", result.stderr
