"""Label Studio, started by the suite, labelling with SAM3 through our server's ML backend
(/label-studio/), driven the way its frontend and data manager drive it: the model connection
(/api/ml), the smart tools' interactive call with a context, "Retrieve predictions". What Label
Studio stored or answered is decoded with its own RLE decoder and compared with what our REST API
answers for the same image and prompt: the same masks, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from pycocotools import mask as coco_mask

from inference.stream_urls import StreamUrlRefused
from labelstudio.rle import mask_to_rle
from sam3site.errors import PayloadTooLarge
from tests.conftest import free_port, mp4_bytes
from tests.labelstudio.label_studio import (
    IMAGE_CONFIG,
    LABEL_STUDIO_VENV,
    PHOTOS,
    VIDEO_CONFIG,
    Backend,
    LabelStudio,
    decode_with_label_studio,
)

pytestmark = pytest.mark.slow
CAT = PHOTOS / "chelsea.jpg"


def coco(rle: dict[str, Any]) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})


def segment(backend: Backend, image: Path, prompts: list[dict[str, Any]]) -> dict[str, Any]:
    """Our REST API, as any client calls it."""
    answer = requests.post(
        f"{backend.server.url}/api/v1/segment/", headers={"X-API-Key": backend.key},
        files={"file": (image.name, image.read_bytes())}, data={"prompts": json.dumps(prompts)}, timeout=120,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def brush_masks(regions: list[dict[str, Any]]) -> list[np.ndarray]:
    return decode_with_label_studio(
        [region["value"]["rle"] for region in regions], [(region["original_height"], region["original_width"]) for region in regions]
    )


def keypoint(x: float, y: float, label: str, *, positive: bool = True) -> dict[str, Any]:
    """A smart KeyPointLabels click as the frontend sends it: percent coordinates."""
    return {
        "type": "keypointlabels", "from_name": "click", "to_name": "image", "is_positive": positive, "origin": "manual",
        "original_width": 300, "original_height": 200, "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]},
    }


@pytest.fixture(scope="module")
def image_project(label_studio: LabelStudio, sam3_backend: Backend) -> tuple[int, list[dict[str, Any]], int]:
    project = label_studio.create_project("SAM3 photos", IMAGE_CONFIG)
    tasks = label_studio.import_files(project, CAT, PHOTOS / "coffee.jpg")
    connected = label_studio.connect(project, sam3_backend.url, sam3_backend.key)
    assert connected.status_code == 201, connected.text
    return project, tasks, connected.json()["id"]


def test_the_connection_needs_an_api_key_as_basic_auth_password(label_studio: LabelStudio, sam3_backend: Backend) -> None:
    project = label_studio.create_project("connection", IMAGE_CONFIG)
    for password in ("not-a-key", sam3_backend.key[:-2] + "xx"):
        refused = label_studio.connect(project, sam3_backend.url, password)
        assert refused.status_code == 400 and "401" in refused.text
    assert label_studio.api("GET", "/api/ml", params={"project": project}).json() == []  # nothing saved
    accepted = label_studio.connect(project, sam3_backend.url, sam3_backend.key)
    assert accepted.status_code == 201 and accepted.json()["model_version"] == "sam3"

    # The protocol's open ends: /health and /webhook need no key; everything else does.
    assert requests.get(f"{sam3_backend.url}/health", timeout=10).json()["status"] == "UP"
    assert requests.post(f"{sam3_backend.url}/webhook", json={"action": "ANNOTATION_CREATED"}, timeout=10).status_code == 200
    unauthenticated = requests.post(f"{sam3_backend.url}/predict", json={"tasks": [{}], "label_config": IMAGE_CONFIG}, timeout=10)
    assert unauthenticated.status_code == 401 and unauthenticated.json()["error"]["code"] == "authentication_required"


def test_clicks_and_a_box_give_the_masks_of_the_rest_api(label_studio: LabelStudio, sam3_backend: Backend, image_project) -> None:
    _, tasks, backend = image_project
    task = tasks[0]  # the cat, 300 x 200
    clicks = [keypoint(50, 45, "Cat"), keypoint(20, 80, "Cat", positive=False)]
    first = label_studio.interactive(backend, task["id"], {"result": clicks})["data"]
    assert [region["type"] for region in first["result"]] == ["brushlabels"]
    region = first["result"][0]
    assert region["value"]["brushlabels"] == ["Cat"] and (region["original_width"], region["original_height"]) == (300, 200)
    ours = segment(sam3_backend, CAT, [{"points": [[150, 90], [60, 160]], "point_labels": [1, 0]}])["results"][0]["instances"][0]
    assert np.array_equal(brush_masks([region])[0], coco(ours["mask"]))
    assert region["score"] == pytest.approx(ours["score"], abs=1e-4)

    # A box with the smart rectangle: one object, labelled with the rectangle's label.
    box = {
        "type": "rectanglelabels", "from_name": "box", "to_name": "image", "origin": "manual",
        "value": {"x": 10, "y": 20, "width": 50, "height": 60, "rotation": 0, "rectanglelabels": ["Cup"]},
    }
    second = label_studio.interactive(backend, task["id"], {"result": [box]})["data"]
    assert second["result"][0]["value"]["brushlabels"] == ["Cup"]
    ours = segment(sam3_backend, CAT, [{"box": [30, 40, 180, 160]}])["results"][0]["instances"][0]
    assert np.array_equal(brush_masks(second["result"])[0], coco(ours["mask"]))
    # The second call on the task: the image was not fetched again, its features came from the cache.
    assert first["info"]["media_cached"] is False or first["info"]["cache_hit"] is False
    assert second["info"] == {**second["info"], "media_cached": True, "cache_hit": True}


def test_retrieve_predictions_labels_every_concept(label_studio: LabelStudio, sam3_backend: Backend, image_project) -> None:
    project, tasks, _ = image_project
    stored = label_studio.retrieve_predictions(project, [tasks[1]["id"]])  # the coffee cup
    assert len(stored) == 1 and stored[0]["model_version"] == "sam3"
    regions = stored[0]["result"]
    assert regions and {region["type"] for region in regions} == {"brushlabels"}  # rectangles are prompt tools here
    # Every label is a concept prompt: "Cat" as itself, "Cup" through predicted_values="coffee cup".
    ours = segment(sam3_backend, PHOTOS / "coffee.jpg", [{"text": "Cat"}, {"text": "coffee cup"}])["results"]
    for label, answer in zip(["Cat", "Cup"], ours, strict=True):
        labelled = [region for region in regions if region["value"]["brushlabels"] == [label]]
        assert len(labelled) == len(answer["instances"])
        for mask, instance in zip(brush_masks(labelled), answer["instances"], strict=True):
            assert np.array_equal(mask, coco(instance["mask"]))
    assert stored[0]["score"] == pytest.approx(np.mean([region["score"] for region in regions]), abs=1e-3)


def test_a_rectangle_on_a_video_frame_is_tracked_through_the_video(
    label_studio: LabelStudio, sam3_backend: Backend, tmp_path: Path,
) -> None:
    clip = tmp_path / "squares.mp4"
    clip.write_bytes(mp4_bytes(frames=8, width=64, height=48))
    project = label_studio.create_project("SAM3 video", VIDEO_CONFIG)
    [task] = label_studio.import_files(project, clip)
    backend = label_studio.connect(project, sam3_backend.url, sam3_backend.key).json()["id"]
    drawn = {
        "type": "videorectangle", "from_name": "box", "to_name": "video", "origin": "manual",
        "value": {
            "labels": ["Square"], "sequence": [{"frame": 3, "enabled": True, "x": 0, "y": 0, "width": 50, "height": 50, "time": 0.2}],
        },
    }
    [track] = label_studio.interactive(backend, task["id"], {"result": [drawn]})["data"]["result"]
    assert track["type"] == "videorectangle" and track["value"]["labels"] == ["Square"] and track["value"]["framesCount"] == 8
    keyframes = track["value"]["sequence"]
    assert [keyframe["frame"] for keyframe in keyframes] == list(range(1, 9))

    # The same prompt through our sessions API: the same boxes on every frame, as Label Studio percentages.
    headers = {"X-API-Key": sam3_backend.key}
    api = f"{sam3_backend.server.url}/api/v1"
    video = requests.post(f"{api}/uploads/", headers=headers, files={"file": ("squares.mp4", clip.read_bytes())}, timeout=60).json()
    session = requests.post(f"{api}/sessions/", headers=headers, json={"video": video["id"]}, timeout=60).json()
    box = {"frame": 2, "box": [0, 0, 32, 24]}
    prompted = requests.post(f"{api}/sessions/{session['id']}/prompts/", headers=headers, json=box, timeout=60)
    assert prompted.status_code == 200, prompted.text
    requests.post(f"{api}/sessions/{session['id']}/propagate/", headers=headers, json={"direction": "both", "start_frame": 2}, timeout=60)
    for _ in range(300):
        record = requests.get(f"{api}/sessions/{session['id']}/", headers=headers, timeout=10).json()
        if record["propagation"].get("state") == "done":
            break
        time.sleep(0.2)
    frames = requests.get(f"{api}/sessions/{session['id']}/frames/", headers=headers, timeout=60).json()["results"]
    requests.delete(f"{api}/sessions/{session['id']}/", headers=headers, timeout=60)
    assert len(frames) == 8
    for keyframe, frame in zip(keyframes, frames, strict=True):
        x1, y1, x2, y2 = frame["objects"][0]["box"]
        seen = x2 > x1 and y2 > y1
        assert keyframe["enabled"] == seen
        if seen:
            assert (keyframe["x"], keyframe["y"], keyframe["width"], keyframe["height"]) == pytest.approx(
                (x1 * 100 / 64, y1 * 100 / 48, (x2 - x1) * 100 / 64, (y2 - y1) * 100 / 48), abs=1e-3
            )

    # With no context ("Retrieve predictions"), every label of <Labels> is tracked as a concept from frame 1.
    [stored] = label_studio.retrieve_predictions(project, [task["id"]])
    assert stored["result"], "the tiny model finds squares at VIDEO_DETECTION_THRESHOLD"
    for region in stored["result"]:
        assert region["type"] == "videorectangle" and region["value"]["labels"] == ["Square"]
        assert {keyframe["frame"] for keyframe in region["value"]["sequence"]} <= set(range(1, 9))


def test_a_task_label_studio_cannot_serve_is_an_error_not_a_500(label_studio: LabelStudio, sam3_backend: Backend, image_project) -> None:
    project, _, backend = image_project
    gone = "/data/upload/999/missing.jpg"  # Label Studio 1.23 answers 500 for an upload whose file is not there
    [task] = [task for task in label_studio.import_tasks(project, [{"image": gone}]) if task["data"]["image"] == gone]
    click = {"result": [keypoint(50, 50, "Cat")]}
    answer = label_studio.api("POST", f"/api/ml/{backend}/interactive-annotating", json={"task": task["id"], "context": click})
    assert answer.status_code == 200 and "502" in answer.json()["errors"][0]  # Label Studio shows our status to the annotator

    auth = ("labeller", sam3_backend.key)
    for data, status, code in [
        ({"image": gone}, 502, "label_studio_error"),
        ({"image": "/data/no-such-route/x.jpg"}, 404, "task_media_not_found"),
        ({"image": "http://169.254.169.254/latest/meta-data/"}, 400, "stream_url_refused"),  # the cloud metadata service
        ({"image": "file:///etc/passwd"}, 400, "task_media_url_invalid"),
        ({"picture": "/data/upload/1/x.jpg"}, 400, "task_media_missing"),  # not under the config's $image
    ]:
        body = {"tasks": [{"id": 1, "data": data}], "label_config": IMAGE_CONFIG}
        refused = requests.post(f"{sam3_backend.url}/predict", auth=auth, json=body, timeout=60)
        assert (refused.status_code, refused.json()["error"]["code"]) == (status, code), refused.text
    text_only = "<View><Text name='t' value='$text'/></View>"
    config = requests.post(f"{sam3_backend.url}/setup", auth=auth, json={"schema": text_only}, timeout=10)
    assert config.status_code == 400 and config.json()["error"]["code"] == "unsupported_label_config"
    assert " 500 " not in sam3_backend.server.log()


def test_media_is_fetched_with_a_legacy_or_a_personal_access_token(label_studio: LabelStudio, monkeypatch: pytest.MonkeyPatch) -> None:
    """labelstudio.media in this process against the real Label Studio: both token kinds; a token it
    refuses is a 502 that names the setting."""
    from django.conf import settings

    from labelstudio import media

    project = label_studio.create_project("tokens", IMAGE_CONFIG)
    [task] = label_studio.import_files(project, CAT)
    monkeypatch.setattr(settings.CONFIG, "label_studio_url", label_studio.url)
    personal = label_studio.api("POST", "/api/token/").json()["token"]  # a JWT refresh token
    for token in (label_studio.token, personal):
        monkeypatch.setattr(settings.CONFIG, "label_studio_api_key", token)
        path, sha256 = media._download(media.absolute_media_url(task["data"]["image"]), limit=10 * 2**20)
        assert path.read_bytes() == CAT.read_bytes() and sha256 == hashlib.sha256(CAT.read_bytes()).hexdigest()
        path.unlink()
    for token, code in [("0" * 40, "label_studio_refused"), (personal[:-4] + "AAAA", "label_studio_refused")]:
        monkeypatch.setattr(settings.CONFIG, "label_studio_api_key", token)
        with pytest.raises(media.LabelStudioUnavailable) as refused:
            media._download(media.absolute_media_url(task["data"]["image"]), limit=10 * 2**20)
        assert refused.value.code == code and refused.value.status_code == 502 and token not in refused.value.message
    monkeypatch.setattr(settings.CONFIG, "label_studio_api_key", label_studio.token)
    other_port = f"http://127.0.0.1:{free_port()}/"  # Label Studio's host, another service on it: not trusted
    with pytest.raises(StreamUrlRefused):
        media._download(media.absolute_media_url(other_port), limit=10 * 2**20)
    with pytest.raises(PayloadTooLarge):  # bounded by the owner's upload limit while it streams
        media._download(media.absolute_media_url(task["data"]["image"]), limit=1000)


def test_brush_rle_is_byte_for_byte_label_studios(label_studio: LabelStudio) -> None:
    """labelstudio.rle against label_studio_sdk's mask2rle (run in Label Studio's environment)."""
    rng = np.random.default_rng(7)
    long_run = np.zeros((300, 400), np.uint8)
    long_run[100:250, 30:390] = 1  # runs longer than 2**16 bytes, split as the SDK splits them
    masks = [np.zeros((5, 7), np.uint8), np.ones((1, 1), np.uint8), (rng.random((61, 83)) > 0.5).astype(np.uint8), long_run]
    ours = [mask_to_rle(mask) for mask in masks]
    script = (
        "import json, sys, numpy as np\n"
        "from label_studio_sdk.converter.brush import mask2rle\n"
        "print(json.dumps([mask2rle(np.array(m, dtype=np.uint8) * 255) for m in json.load(sys.stdin)]))\n"
    )
    done = subprocess.run(
        [str(LABEL_STUDIO_VENV / "bin" / "python"), "-c", script], input=json.dumps([m.tolist() for m in masks]),
        capture_output=True, text=True, check=True, timeout=120,
    )
    assert json.loads(done.stdout) == ours
