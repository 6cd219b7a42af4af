"""Video masks through the server equal transformers' own ``Sam3VideoModel`` with Meta's post-processing (issue 18).

A session on a video made of a real photo (a pan over ``chelsea.jpg``), text-prompted, propagated
by a real model worker (tiny SAM3, ``MASK_POSTPROCESSING`` at its default ``meta``, temporal
disambiguation off so that objects show on this short clip), against
transformers' plain video session API run in this process with the same post-processing
installed by ``load_sam3``: every stored frame holds the same object ids and bit-identical masks.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import requests
import torch
from PIL import Image

from inference.masks import decode_rle
from inference.runtime import engine
from inference.runtime.loader import load_sam3
from inference.runtime.mask_postprocessing import MetaPostprocessingKernel
from inference.runtime.video import set_temporal_disambiguation
from tests.conftest import Workers, launch_workers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
PHOTO = Path(__file__).parent / "checkpoints" / "images" / "chelsea.jpg"
FRAMES, WIDTH, HEIGHT = 10, 160, 120


def write_pan(path: Path) -> list[np.ndarray]:
    """An MP4 panning over the photo; returns its frames as PyAV decodes them (what the worker reads)."""
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = WIDTH, HEIGHT, "yuv420p", 4_000_000
        for index in range(FRAMES):
            crop = np.ascontiguousarray(photo[20 + index * 3 : 20 + index * 3 + HEIGHT, 40 + index * 6 : 40 + index * 6 + WIDTH])
            for packet in stream.encode(av.VideoFrame.from_ndarray(crop, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[np.ndarray]]:
    path = tmp_path_factory.mktemp("video") / "pan.mp4"
    return path, write_pan(path)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint: Path, video: tuple[Path, list[np.ndarray]]):
    """The model in this process, with a detection threshold that admits a few of the tiny model's detections."""
    loaded = load_sam3(tiny_checkpoint, None, "cpu")
    features = engine.compute_image_features(loaded, video[1][0], include_tracker=False)
    scores = engine.segment_concept(loaded, features, text="cat", threshold=0.0).scores
    threshold = round(float(scores[4]), 6)
    loaded.model.score_threshold_detection = loaded.model.new_det_thresh = threshold
    # Without SAM3's hold-back (15 frames) the tiny model's objects show from the first frame of this short clip.
    set_temporal_disambiguation(loaded, False)
    return loaded, threshold


@pytest.fixture(scope="module")
def worker(django_db_setup: None, tiny_checkpoint: Path, reference, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    workers = launch_workers(
        tmp_path_factory.mktemp("workers"), tiny_checkpoint,
        VIDEO_DETECTION_THRESHOLD=str(reference[1]), VIDEO_MODEL_TEMPORAL_DISAMBIGUATION="false",
    )
    yield workers
    workers.stop()


def test_session_frames_equal_transformers_video_model_with_metas_postprocessing(
    start_server, worker, make_client, reference, video
) -> None:
    from transformers.models.sam3_video import modeling_sam3_video

    loaded, _threshold = reference
    assert isinstance(modeling_sam3_video.cv_utils_kernel, MetaPostprocessingKernel)  # installed by load_sam3
    server, alice = start_server(), make_client("alice")
    headers = {"X-API-Key": alice.key}
    path, frames = video
    upload = requests.post(f"{server.url}/api/v1/uploads/", headers=headers, files={"file": ("pan.mp4", path.read_bytes())}, timeout=60)
    session = requests.post(f"{server.url}/api/v1/sessions/", headers=headers, json={"video": upload.json()["id"]}, timeout=60).json()
    base = f"{server.url}/api/v1/sessions/{session['id']}"
    assert requests.post(f"{base}/prompts/", headers=headers, json={"frame": 0, "text": "cat"}, timeout=60).status_code == 200
    assert requests.post(f"{base}/propagate/", headers=headers, json={"direction": "forward"}, timeout=60).status_code == 202
    stored: list[dict] = []
    for _ in range(600):
        state = requests.get(base + "/", headers=headers, timeout=30).json()
        if state["propagation"].get("state") == "done":
            stored = requests.get(f"{base}/frames/?limit=100", headers=headers, timeout=30).json()["results"]
            break
        assert state["propagation"].get("state") in (None, "running"), state
        time.sleep(0.2)
    assert [f["frame"] for f in stored] == list(range(FRAMES))

    processor = loaded.video_processor
    expected_session = processor.init_video_session(video=frames, inference_device=loaded.device, dtype=loaded.dtype)
    processor.add_text_prompt(expected_session, "cat")
    objects_seen = 0
    with torch.inference_mode():
        for output in loaded.model.propagate_in_video_iterator(inference_session=expected_session):
            expected = processor.postprocess_outputs(expected_session, output)
            got = stored[int(output.frame_idx)]["objects"]
            assert [o["id"] for o in got] == expected["object_ids"].tolist(), output.frame_idx
            for obj, mask in zip(got, expected["masks"]):
                assert np.array_equal(decode_rle(obj["mask"]), mask.cpu().numpy()), (output.frame_idx, obj["id"])
            objects_seen += len(got)
    assert objects_seen >= FRAMES  # the comparison covered masks, not empty frames
    assert "kernels library is not installed" not in worker.log()  # transformers never looked for its hub kernel
