"""Bytes of tracking state one tracked frame leaves per object, at a given model resolution.

The ceiling of a bounded session (docs/benchmarks-video.md) is a count of frames times this. It
loads the model at ``--resolution``, clicks one object on a ``--width``x``--height`` video and
tracks ``--frames`` frames with the state bound off, then sums the tensors each stored
non-conditioning output holds, with and without its input-size ``high_res_masks`` (which the
bound drops), each storage counted once.

    .venv/bin/python bench/bench_state_size.py --model full --resolution 1008 --width 1920 --height 1080
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import harness  # noqa: F401  # puts the repo root on sys.path
import numpy as np
from bench_sessions import private_checkpoint


def tensor_bytes(value: Any, seen: set[int]) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        storage = value.untyped_storage()
        if storage.data_ptr() in seen:
            return 0
        seen.add(storage.data_ptr())
        return storage.nbytes()
    if isinstance(value, dict):
        return sum(tensor_bytes(v, seen) for v in value.values())
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "full"), default="full")
    parser.add_argument("--resolution", type=int, default=1008)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--frames", type=int, default=3)
    args = parser.parse_args()

    from inference.runtime.loader import load_sam3
    from inference.runtime.video import InteractiveVideoSession

    with tempfile.TemporaryDirectory(prefix="sam3-bench-state-") as tmp:
        loaded = load_sam3(private_checkpoint(args.model, Path(tmp)), None, "cpu", resolution=args.resolution)
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 255, (args.height, args.width, 3), dtype=np.uint8) for _ in range(args.frames)]
        session = InteractiveVideoSession(loaded, frames, keep_history=None)
        session.add_prompt(0, 1, points=[(args.width / 2, args.height / 2)])
        for _ in session.propagate(start_frame=0):
            pass
        outputs = session.session.output_dict_per_obj[0]["non_cond_frame_outputs"]
        frame, output = max(outputs.items())
        full = tensor_bytes(output, set())
        high_res = tensor_bytes(output.get("high_res_masks"), set())
        print(f"{args.model} at {args.resolution} px, {args.width}x{args.height} video, frame {frame} of one object:")
        for key, value in output.items():
            print(f"  {key:22s} {tensor_bytes(value, set()) / 2**20:8.3f} MiB")
        print(f"  total {full / 2**20:.3f} MiB; without high_res_masks (what the bound keeps) {(full - high_res) / 2**20:.3f} MiB")


if __name__ == "__main__":
    main()
