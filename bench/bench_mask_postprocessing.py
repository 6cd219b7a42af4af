"""What Meta's mask post-processing costs per video frame (MASK_POSTPROCESSING=meta vs off).

Per frame, transformers' ``Sam3VideoModel`` calls ``nms_masks`` once (over the detector's queries
above the score threshold) and ``fill_holes_in_mask_scores`` on the tracked objects' low-resolution
masks (288 x 288 at 1008 px input), twice per call (holes, then specks). This times both as
transformers calls them, on masks shaped like SAM3's (smooth blobs with holes and specks), with:
  off   - transformers without its kernel (what the server did before: IoUs computed, then dropped)
  meta  - our kernel (inference/runtime/mask_postprocessing.py)
  meta's own CPU code (sam3.perflib, scikit-image), when unpacked at .venv/meta-sam3
and, end to end, a tiny SAM3 propagating a text prompt through a video in-process, meta vs off.

    .venv/bin/python bench/bench_mask_postprocessing.py [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import harness  # noqa: F401 - puts the repository root on sys.path
import numpy as np
import torch
from harness import p50, print_table

ROOT = Path(__file__).resolve().parent.parent
LOW_RES = 288  # SAM3's low-resolution mask size at 1008 px (4 * 1008 / 14)
QUERIES = 200  # the published detector's queries


def blobs(count: int, size: int, seed: int) -> torch.Tensor:
    """Mask logits shaped like SAM3's: smooth objects with a few holes and specks."""
    import cv2

    generator = np.random.default_rng(seed)
    logits = np.full((count, 1, size, size), -4.0, dtype=np.float32)
    for index in range(count):
        canvas = np.zeros((size, size), dtype=np.float32)
        centre = generator.integers(size // 4, 3 * size // 4, 2)
        cv2.ellipse(canvas, tuple(int(c) for c in centre), (int(generator.integers(20, 80)), int(generator.integers(20, 80))),
                    0, 0, 360, 1.0, -1)
        noise = cv2.GaussianBlur(generator.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 2.0)
        logits[index, 0] = 8 * canvas - 4 + 6 * noise  # holes inside, specks outside
    return torch.from_numpy(logits)


def timed(function: Callable[[], object], repeats: int) -> float:
    function()  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        samples.append(time.perf_counter() - started)
    return p50(samples) * 1000


def synchronized(function: Callable[[], object], device: torch.device) -> Callable[[], object]:
    def run() -> object:
        result = function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result

    return run


def operation_costs(device: torch.device, repeats: int) -> list[dict]:
    from transformers.models.sam3_video import modeling_sam3_video as video

    from inference.runtime.mask_postprocessing import install_video_postprocessing

    meta_cpu = None
    meta_dir = ROOT / ".venv" / "meta-sam3"
    if device.type == "cpu" and (meta_dir / "sam3").is_dir():
        sys.path.insert(0, str(meta_dir))
        import sam3.model.sam3_tracker_utils
        import sam3.perflib.nms

        meta_cpu = sam3
    rows = []
    for objects in (1, 5, 20):
        masks = blobs(objects, LOW_RES, seed=objects).to(device)
        detections = blobs(QUERIES, LOW_RES, seed=100 + objects).squeeze(1).to(device)
        probs = torch.rand(QUERIES, generator=torch.Generator().manual_seed(objects)).to(device)
        probs[objects * 2 :] *= 0.3  # about 2 detections per object above the 0.5 threshold
        row: dict = {"objects": objects, "device": str(device)}
        for mode in ("off", "meta"):
            install_video_postprocessing(mode)  # type: ignore[arg-type]
            row[f"fill_{mode}_ms"] = timed(synchronized(partial(video.fill_holes_in_mask_scores, masks, 16), device), repeats)
            row[f"nms_{mode}_ms"] = timed(synchronized(partial(video.nms_masks, probs, detections, 0.5, 0.1), device), repeats)
        if meta_cpu is not None:
            row["fill_meta_sam3_ms"] = timed(partial(meta_cpu.model.sam3_tracker_utils.fill_holes_in_mask_scores, masks, 16), repeats)
            row["nms_meta_sam3_ms"] = timed(partial(meta_cpu.perflib.nms.nms_masks, probs, detections, 0.5, 0.1), repeats)
        rows.append(row)
    install_video_postprocessing("meta")
    return rows


def propagation(repeats: int) -> list[dict]:
    """Tiny SAM3 in-process: frames/s of a text prompt through 24 frames, meta vs off, alternating."""
    from inference.runtime import engine
    from inference.runtime.loader import load_sam3
    from inference.runtime.tiny import write_tiny_checkpoint
    from inference.runtime.video import ConceptVideoSession

    checkpoint = write_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny")
    frames = [np.roll(np.asarray(blobs(1, 160, seed=9)[0, 0].clamp(0, 1).mul(255).byte()), 3 * i, axis=1) for i in range(24)]
    frames = [np.stack([f, f, f], axis=-1) for f in frames]
    seconds: dict[str, list[float]] = {"off": [], "meta": []}
    for _ in range(repeats):
        for mode in ("off", "meta"):
            loaded = load_sam3(checkpoint, None, "cpu", mask_postprocessing=mode)  # type: ignore[arg-type]
            features = engine.compute_image_features(loaded, frames[0], include_tracker=False)
            scores = engine.segment_concept(loaded, features, text="dog", threshold=0.0).scores
            loaded.model.score_threshold_detection = loaded.model.new_det_thresh = float(scores[5])
            session = ConceptVideoSession(loaded, frames)
            session.add_text_prompt("dog")
            started = time.perf_counter()
            objects = sum(len(instances.object_ids) for _, instances in session.propagate())
            seconds[mode].append(time.perf_counter() - started)
    return [{"mode": mode, "frames_per_s": len(frames) / p50(times), "objects_last_run": objects} for mode, times in seconds.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    device = torch.device(args.device)
    costs = operation_costs(device, args.repeats)
    header = ["objects", "fill off ms", "fill meta ms", "NMS off ms", "NMS meta ms"]
    if "fill_meta_sam3_ms" in costs[0]:
        header += ["fill Meta's sam3 ms", "NMS Meta's sam3 ms"]
    print_table(
        f"Per frame at 1008 px ({LOW_RES} x {LOW_RES} masks, {QUERIES} queries), {device}, p50 of {args.repeats}", header,
        [[r["objects"], r["fill_off_ms"], r["fill_meta_ms"], r["nms_off_ms"], r["nms_meta_ms"],
          *([r["fill_meta_sam3_ms"], r["nms_meta_sam3_ms"]] if "fill_meta_sam3_ms" in r else [])] for r in costs],
    )
    runs = propagation(max(1, args.repeats // 10))
    print_table("Tiny SAM3, text prompt, 24 frames in-process", ["mode", "frames/s", "objects (sum over frames)"],
                [[r["mode"], r["frames_per_s"], r["objects_last_run"]] for r in runs])
    if args.json:
        args.json.write_text(json.dumps({"operations": costs, "propagation": runs}, indent=2))


if __name__ == "__main__":
    main()
