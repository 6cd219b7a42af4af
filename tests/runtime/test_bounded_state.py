"""A video session's tracking state stays bounded, and bounding it changes no result.

Each flow runs twice on the same 200-frame clip with the tiny SAM3: once bounded as the server
runs it (``keep_history=32``), once unbounded as transformers keeps it (``keep_history=None``);
every frame's object ids, scores and masks must be bit-identical, and only the bounded session
must stay small.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from inference.runtime import engine, load_sam3
from inference.runtime.bounded_state import CountedFrames, TrackedFrames
from inference.runtime.engine import Instances
from inference.runtime.tiny import write_tiny_checkpoint
from inference.runtime.video import ConceptVideoSession, InteractiveVideoSession

FRAMES = 200
PROMPT_FRAME = 100
WINDOW = 32  # inference.video_sessions.live.KEEP_HISTORY_FRAMES


@pytest.fixture(autouse=True)
def _fresh_redis_and_dirs() -> Iterator[None]:
    """Replaces tests/conftest.py's autouse Redis/upload-dir reset: nothing here needs them."""
    yield


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    loaded = load_sam3(write_tiny_checkpoint(tmp_path_factory.mktemp("sam3-tiny")), None, "cpu")
    features = engine.compute_image_features(loaded, _clip()[0], include_tracker=False)
    scores = engine.segment_concept(loaded, features, text="dog", threshold=0.0).scores
    threshold = float(scores[3])  # a few random detections per frame, so concept tracking tracks
    loaded.model.score_threshold_detection = loaded.model.new_det_thresh = threshold
    # Every detection counts as confident, so concept tracking reconditions each 16th frame.
    loaded.model.high_conf_thresh = loaded.model.high_iou_thresh = 0.0
    return loaded


def _clip(n: int = FRAMES, height: int = 72, width: int = 96) -> list[np.ndarray]:
    """A textured picture drifting right and down, with a bright square bouncing across it."""
    rng = np.random.default_rng(7)
    base = (rng.random((height, width, 3)) * 120).astype(np.uint8)
    frames = []
    for i in range(n):
        frame = np.roll(base, shift=(i // 3, i), axis=(0, 1)).copy()
        x = abs((i * 3) % (2 * (width - 20)) - (width - 20))
        frame[20:40, x : x + 20] = (250, 220, 40)
        frames.append(frame)
    return frames


def _results(pass_results: list[tuple[int, Instances]]) -> list[tuple[int, list[int], torch.Tensor, torch.Tensor]]:
    return [(frame, r.object_ids.tolist(), r.scores, torch.as_tensor(r.masks)) for frame, r in pass_results]


def _assert_identical(bounded: list, unbounded: list) -> None:
    assert [f for f, *_ in bounded] == [f for f, *_ in unbounded]
    for (frame, ids_a, scores_a, masks_a), (_, ids_b, scores_b, masks_b) in zip(bounded, unbounded):
        assert ids_a == ids_b, f"frame {frame}"
        assert torch.equal(scores_a, scores_b), f"frame {frame}"
        assert torch.equal(masks_a, masks_b), f"frame {frame}"


def _stored_outputs(session) -> tuple[int, int, bool]:
    """(largest number of non-conditioning outputs of an object, of frame-keyed scores, any high_res_masks left)."""
    per_object = session.output_dict_per_obj.values()
    non_cond = max((len(o["non_cond_frame_outputs"]) for o in per_object), default=0)
    scores = len(getattr(session, "obj_id_to_tracker_score_frame_wise", {}))
    high_res = any("high_res_masks" in out for o in per_object for kind in o.values() for out in kind.values())
    return non_cond, scores, high_res


def _interactive_both_ways(loaded, keep: int | None):
    session = InteractiveVideoSession(loaded, _clip(), keep_history=keep)
    session.add_prompt(PROMPT_FRAME, 1, points=[(40, 30)])
    session.add_prompt(PROMPT_FRAME, 2, box=(10, 5, 50, 60))
    forward = _results(list(session.propagate(start_frame=PROMPT_FRAME)))
    after_forward = _stored_outputs(session.session)
    backward = _results(list(session.propagate(start_frame=PROMPT_FRAME, reverse=True)))
    return forward + backward, after_forward, _stored_outputs(session.session), session.session


@pytest.mark.timeout(900)  # 800 tracked frames on a busy 2-core machine
def test_interactive_tracking_bounded_is_bit_identical_to_unbounded(loaded):
    bounded, bounded_mid, bounded_end, state = _interactive_both_ways(loaded, WINDOW)
    unbounded, _unbounded_mid, unbounded_end, _ = _interactive_both_ways(loaded, None)

    assert len(bounded) == FRAMES + 1  # the prompted frame comes in both directions
    _assert_identical(bounded, unbounded)
    # transformers keeps every frame (and its input-size masks); the bound keeps a window around
    # each anchor: the prompted frame, then also both ends of each pass.
    assert unbounded_end[0] == FRAMES - 1 and unbounded_end[2]
    assert bounded_mid[0] <= 2 * (2 * WINDOW + 1) and bounded_end[0] <= 3 * (2 * WINDOW + 1) and not bounded_end[2]
    assert all(isinstance(tracked, TrackedFrames) for tracked in state.frames_tracked_per_obj.values())
    assert len(state.frames_tracked_per_obj[0]._runs) <= 2  # one run per direction, however long


def _concept_both_ways(loaded, keep: int | None):
    session = ConceptVideoSession(loaded, _clip(), keep_history=keep)
    session.add_text_prompt("dog")
    forward = _results(list(session.propagate(start_frame=PROMPT_FRAME)))
    # As the server's "both": backward from one frame later (SAM3 leaves out its start frame).
    backward = _results(list(session.propagate(start_frame=PROMPT_FRAME + 1, reverse=True)))
    return forward + backward, _stored_outputs(session.session), session.session


@pytest.mark.timeout(900)
def test_concept_tracking_bounded_is_bit_identical_to_unbounded(loaded):
    bounded, bounded_end, state = _concept_both_ways(loaded, WINDOW)
    unbounded, unbounded_end, unbounded_state = _concept_both_ways(loaded, None)

    assert len(bounded) == FRAMES + 1
    # Meta's NMS (MASK_POSTPROCESSING=meta) keeps one of the tiny model's overlapping random detections:
    # an object on about every other frame of both passes.
    assert sum(len(ids) for _, ids, _, _ in bounded) >= FRAMES // 2, "the test needs objects tracked through the clip"
    assert max(len(o["cond_frame_outputs"]) for o in state.output_dict_per_obj.values()) > 2, "and reconditioned"
    _assert_identical(bounded, unbounded)
    assert unbounded_end[1] == FRAMES and unbounded_end[2]
    assert bounded_end[0] <= 3 * (2 * WINDOW + 1) and bounded_end[1] <= 3 * (2 * WINDOW + 1) and not bounded_end[2]
    assert all(isinstance(frames, CountedFrames) for frames in state.unmatched_frame_inds.values())
    # Counting instead of listing keeps the lengths the hot-start heuristics compare.
    for obj_id, frames in unbounded_state.unmatched_frame_inds.items():
        assert len(state.unmatched_frame_inds[obj_id]) == len(frames)


def test_tracked_frames_answers_like_the_dict_it_replaces():
    plain: dict[int, dict] = {}
    runs = TrackedFrames()
    for frame, reverse in [(5, False), (6, False), (7, False), (4, True), (3, True), (6, True), (20, False)]:
        plain[frame] = runs_value = {"reverse": reverse}
        runs[frame] = runs_value
    assert sorted(runs) == sorted(plain) and len(runs) == len(plain)
    assert all(runs[f] == plain[f] for f in plain)
    assert 8 not in runs and 2 not in runs and "x" not in runs
    del runs[6]
    del plain[6]
    assert sorted(runs) == sorted(plain) and 5 in runs and 7 in runs
    counted = CountedFrames([1, 2])
    counted.append(9)
    assert len(counted) == 3 and list(counted) == [1, 2, 9]


def test_video_state_device_setting_reaches_both_trackers(loaded, settings, tmp_path):
    """VIDEO_STATE_DEVICE=cpu puts the tracking state in host memory (a no-op on a CPU-only host,
    where this test can only check that the setting arrives; a GPU run is in the benchmarks)."""
    import av

    from inference.video_sessions.live import LiveSession

    path = tmp_path / "clip.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 96, 72, "yuv420p"
        for frame in _clip(4):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    assert LiveSession(loaded, path).state_device is None  # default: the model's device
    settings.CONFIG = settings.CONFIG.model_copy(update={"video_state_device": "cpu"})
    session = LiveSession(loaded, path)
    assert session.state_device == "cpu"
    session.add_points(0, None, [[40, 30]], [1], None)
    session.add_text(0, "dog")
    assert session.interactive is not None and session.concept is not None
    assert torch.device(session.interactive.session.inference_state_device) == torch.device("cpu")
    assert torch.device(session.concept.session.inference_state_device) == torch.device("cpu")
    session.close()
