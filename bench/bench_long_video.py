"""Memory of one video session against frames processed: bounded (as the worker runs it) vs unbounded.

Each run is a fresh process that does what a model worker does for one session: it loads the
model, opens a ``LiveSession`` over an MP4 (lazy ``VideoFrames``), prompts on frame 0 (one click
for ``interactive``; the text "square" for ``concept``), propagates forward through the whole
video and RLE-encodes every frame's masks. Every ``--sample-every`` frames it reads its RSS after
``malloc_trim`` (so freed heap counts as freed). The baseline is the same code with the state
bound switched off (``KEEP_HISTORY_FRAMES = None``: every frame's tracking state kept, as
transformers keeps it), run over ``--baseline-frames`` frames: enough to show its slope.

    .venv/bin/python bench/bench_long_video.py --model tiny --frames 3000 --json /tmp/long-tiny.json
    .venv/bin/python bench/bench_long_video.py --model full --frames 300 --json /tmp/long-full.json

Growth is reported from frame 100 to the last frame, of the whole process's RSS and in MiB.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import harness  # bench/ is sys.path[0] when run as a script; harness puts the repo root on sys.path
from bench_sessions import malloc_trim, private_checkpoint, rss_bytes, write_video
from harness import print_table

MODES = ("interactive", "concept")
REFERENCE_FRAME = 100  # growth is measured from here to the end


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One session in this fresh process; returns its RSS curve."""
    import torch

    import inference.video_sessions.live as live
    from inference.legs import Leg
    from inference.masks import encode_rle
    from inference.runtime import engine
    from inference.runtime.loader import load_sam3

    if not spec["bounded"]:
        live.KEEP_HISTORY_FRAMES = None  # the unbounded baseline
    loaded = load_sam3(Path(spec["checkpoint"]), None, os.environ.get("IMAGE_MODEL_DEVICE", "cpu"), resolution=spec["resolution"])

    def run(video: Path, point: list[float], frames: int | None, curve: list[list[int]] | None) -> int:
        session = live.LiveSession(loaded, video)
        if spec["mode"] == "interactive":
            session.add_points(0, None, [point], [1], None)
        else:
            # Random weights score every detection alike: admit about three per frame, as the tests do.
            features = engine.compute_image_features(loaded, session.frames[0], include_tracker=False)
            scores = engine.segment_concept(loaded, features, text="square", threshold=0.0).scores
            loaded.model.score_threshold_detection = loaded.model.new_det_thresh = float(scores[min(3, len(scores) - 1)])
            session.add_text(0, "square")
        count = 0
        max_frames = None if frames is None else frames - 1
        for step in session.propagation([Leg(reverse=False, first=0, max_frames=max_frames)]):
            if step is None:
                continue
            for instances in step.instances:
                encode_rle(instances.masks)
            count += 1
            if curve is not None and (count % spec["sample_every"] == 0 or count == REFERENCE_FRAME):
                malloc_trim()
                curve.append([count, rss_bytes()])
        session.close()
        return count

    run(Path(spec["warm_video"]), spec["point"], None, None)  # one-time allocations are not the session's
    gc.collect()
    malloc_trim()
    before = rss_bytes()
    curve: list[list[int]] = [[0, before]]
    started = time.perf_counter()
    count = run(Path(spec["video"]), spec["point"], spec["frames"], curve)
    return {"frames": count, "rss_before": before, "curve": curve, "seconds": time.perf_counter() - started,
            "torch_threads": torch.get_num_threads()}


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    curve = dict(result["curve"])
    at_reference, at_end = curve.get(REFERENCE_FRAME), result["curve"][-1][1]
    session_mib = (at_end - result["rss_before"]) / 2**20
    growth = None if at_reference is None else (at_end - at_reference) / at_reference * 100
    return {
        "rss_before_mib": result["rss_before"] / 2**20,
        "session_at_100_mib": None if at_reference is None else (at_reference - result["rss_before"]) / 2**20,
        "session_at_end_mib": session_mib,
        "growth_100_to_end_mib": None if at_reference is None else (at_end - at_reference) / 2**20,
        "growth_100_to_end_pct": growth,
        "ms_per_frame": result["seconds"] / max(result["frames"], 1) * 1000,
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2]))), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--resolution", type=int, help="model input size (default: tiny's own; 224 for full)")
    parser.add_argument("--frames", type=int, help="video length, bounded runs (default 3000 tiny, 300 full)")
    parser.add_argument("--baseline-frames", type=int, help="unbounded runs (default 600 tiny, 150 full)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--sample-every", type=int, default=50)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    full = args.model == "full"
    args.resolution = args.resolution or (224 if full else None)
    args.frames = args.frames or (300 if full else 3000)
    args.baseline_frames = args.baseline_frames or (150 if full else 600)

    report: dict[str, Any] = {"machine": harness.machine_info(), "args": {k: str(v) for k, v in vars(args).items()}, "runs": []}
    with tempfile.TemporaryDirectory(prefix="sam3-bench-long-") as tmp:
        workdir = Path(tmp)
        checkpoint = private_checkpoint(args.model, workdir)
        video, warm = workdir / "long.mp4", workdir / "warm.mp4"
        centres = write_video(video, args.frames, args.width, args.height)
        write_video(warm, 3, args.width, args.height)
        print(f"{args.model} model, resolution {args.resolution or 'checkpoint default'}, {args.frames}-frame "
              f"{args.width}x{args.height} video, {report['machine']['cpu_cores']} cores", flush=True)
        rows = []
        for mode in args.modes.split(","):
            for bounded in (True, False):
                frames = args.frames if bounded else args.baseline_frames
                spec = {"checkpoint": str(checkpoint), "resolution": args.resolution, "mode": mode, "bounded": bounded,
                        "video": str(video), "warm_video": str(warm), "point": centres[0], "frames": frames,
                        "sample_every": args.sample_every}
                done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                                      check=False)
                if done.returncode != 0:
                    print(done.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{mode} bounded={bounded}: child failed")
                result = json.loads(done.stdout.strip().splitlines()[-1])
                summary = summarize(result)
                report["runs"].append({"mode": mode, "bounded": bounded, **result, **summary})
                rows.append([mode, "bounded (server)" if bounded else "unbounded (transformers)", result["frames"],
                             f"{summary['rss_before_mib']:.0f}", f"{summary['session_at_100_mib']:.1f}",
                             f"{summary['session_at_end_mib']:.1f}", f"{summary['growth_100_to_end_mib']:+.1f}",
                             f"{summary['growth_100_to_end_pct']:+.2f} %", f"{summary['ms_per_frame']:.0f}"])
                print(f"  {mode} {'bounded' if bounded else 'unbounded'}: {result['frames']} frames, "
                      f"growth after frame 100 {summary['growth_100_to_end_pct']:+.2f} %", flush=True)
                if args.json:
                    args.json.write_text(json.dumps(report, indent=1) + "\n")
        header = ["mode", "state", "frames", "RSS before MiB", "session @100 MiB", "session @end MiB",
                  "growth 100→end MiB", "growth 100→end of RSS", "ms/frame"]
        print_table(f"Session memory against frames processed ({args.model})", header, rows)


if __name__ == "__main__":
    main()
