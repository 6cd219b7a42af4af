"""(d) Mask post-processing: 100 instances at 1920x1080, plain path vs the server's.

Runs where the model's masks would be: IMAGE_MODEL_DEVICE (default cpu; cuda:0 on a GPU machine).

Input: what SAM3 hands post-processing, low-resolution mask probabilities [100, 288, 288] float32
(288 = 4 * 1008 / 14 at the published input size), blob-like (sigmoid of smoothly upsampled noise)
so the RLEs have realistic run counts. Both paths: bilinear upscale to 1080x1920
(align_corners=False) -> > 0.5 -> COCO RLE.

  plain: transformers-style post-processing (all 100 masks upsampled at once, as
         Sam3ImageProcessor.post_process_instance_segmentation does), `.numpy()`, a column-major
         [H, W, N] uint8 copy, pycocotools.mask.encode;
  ours:  the engine's chunked upsample into a preallocated bool tensor
         (inference/runtime/engine.py `_instances_from_detector`) + inference.masks.encode_rle.

The RLEs must be byte-identical (asserted). The totals are compared with the model's own time per
image: --model-seconds S, --image-api-json (a bench_image_api.py --json file), or --measure-full R
(load the full-size random SAM3 and time backbone + one text prompt at input size R, e.g. 1008).

    .venv/bin/python bench/bench_masks.py --measure-full 1008 --json /tmp/masks.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness  # bench/ is sys.path[0] when run as a script; harness puts the repo root on sys.path
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's own idiom)
from harness import p50, print_table
from pycocotools import mask as coco_mask

from inference.masks import encode_rle, encode_rle_reference
from inference.runtime.engine import _MASK_UPSAMPLE_CHUNK

INSTANCES, LOW_RES, HEIGHT, WIDTH = 100, 288, 1080, 1920
MASK_THRESHOLD = 0.5
DEVICE = torch.device(os.environ.get("IMAGE_MODEL_DEVICE", "cpu"))  # where the model's masks live


def mask_probabilities(seed: int = 0) -> torch.Tensor:
    """[100, 288, 288] float32 probabilities of blob-like masks (random 9x9 logits, upsampled)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(INSTANCES, 1, 9, 9, generator=generator) * 4 - 2  # ~30% of each mask set
    logits = F.interpolate(coarse, size=(LOW_RES, LOW_RES), mode="bicubic", align_corners=False)
    return logits.squeeze(1).sigmoid().contiguous().to(DEVICE)


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function()
    if DEVICE.type == "cuda":  # GPU work is asynchronous: wait for it before stopping the clock
        torch.cuda.synchronize(DEVICE)
    return result, time.perf_counter() - started


def plain_path(probabilities: torch.Tensor) -> tuple[list[dict[str, Any]], dict[str, float]]:
    def upscale() -> torch.Tensor:
        upsampled = F.interpolate(
            probabilities.unsqueeze(0), size=(HEIGHT, WIDTH), mode="bilinear", align_corners=False
        )
        return upsampled.squeeze(0) > MASK_THRESHOLD

    masks, up_s = timed(upscale)
    # pycocotools wants [H, W, N] uint8 in column-major order: one full copy of every mask.
    array, copy_s = timed(lambda: np.asfortranarray(masks.cpu().numpy().transpose(1, 2, 0).astype(np.uint8)))
    rles, encode_s = timed(
        lambda: [{"size": r["size"], "counts": r["counts"].decode("ascii")} for r in coco_mask.encode(array)]
    )
    return rles, {"upscale_threshold": up_s, "layout_copy": copy_s, "encode": encode_s}


def our_path(probabilities: torch.Tensor) -> tuple[list[dict[str, Any]], dict[str, float], torch.Tensor]:
    def upscale() -> torch.Tensor:
        # The loop of engine._instances_from_detector: bounded float scratch, results straight into bool.
        masks = torch.empty((probabilities.shape[0], HEIGHT, WIDTH), dtype=torch.bool, device=probabilities.device)
        for start in range(0, probabilities.shape[0], _MASK_UPSAMPLE_CHUNK):
            chunk = probabilities[start : start + _MASK_UPSAMPLE_CHUNK]
            upsampled = F.interpolate(chunk.unsqueeze(0), size=[HEIGHT, WIDTH], mode="bilinear", align_corners=False)
            masks[start : start + chunk.shape[0]] = upsampled.squeeze(0) > MASK_THRESHOLD
        return masks

    masks, up_s = timed(upscale)
    rles, encode_s = timed(lambda: encode_rle(masks))
    return rles, {"upscale_threshold": up_s, "layout_copy": 0.0, "encode": encode_s}, masks


def model_seconds_full(resolution: int, repeats: int = 3) -> dict[str, float]:
    """Backbone + one text prompt of the full-size random SAM3 on a 1920x1080 image, p50 of ``repeats``.

    threshold=1.0 keeps no instance, so the figure is the model alone (no mask upscale/encode).
    Each run prompts a different text: the text encoder runs every time, as for a new prompt.
    """
    from bench.checkpoints import ensure_checkpoint
    from inference.runtime.engine import compute_image_features, segment_concept
    from inference.runtime.loader import load_sam3

    loaded = load_sam3(ensure_checkpoint("full"), None, str(DEVICE), resolution=resolution)
    image = harness.random_image(WIDTH, HEIGHT, seed=0)
    features_s, prompt_s = [], []
    for index, text in enumerate(("visual", "dog", "cat", "person", "bus")[: repeats + 1]):
        features, f_s = timed(lambda: compute_image_features(loaded, image))
        _, t_s = timed(lambda features=features, text=text: segment_concept(loaded, features, text=text, threshold=1.0))
        print(f"  full model at {resolution} px, run {index}: backbone {f_s:.1f} s, prompt {t_s:.2f} s", flush=True)
        if index:  # the first run is a warm-up
            features_s.append(f_s)
            prompt_s.append(t_s)
    return {"features": p50(features_s), "prompt": p50(prompt_s), "resolution": resolution}


def model_seconds_from_json(path: Path) -> dict[str, float]:
    report = json.loads(path.read_text())
    base = report["overhead"]["in_process"]
    return {
        "features": p50([r["features"] for r in base]),
        "prompt": p50([r["prompt"] for r in base]),
        "resolution": report["config"]["resolution"],
        "model": report["config"]["model"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of each path (p50 reported)")
    parser.add_argument("--model-seconds", type=float, help="the model's time per image (backbone + prompt), seconds")
    parser.add_argument("--image-api-json", type=Path, help="take the model time from a bench_image_api.py --json file")
    parser.add_argument("--measure-full", type=int, metavar="RESOLUTION", help="time the full-size model at this size")
    parser.add_argument("--max-other-cores", type=float, default=0.2,
                        help="retry a measurement during which other programs used more cores than this")
    parser.add_argument("--retries", type=int, default=2, help="retries of a measurement disturbed by other programs")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()

    report: dict[str, Any] = {"machine": harness.machine_info(), "repeats": args.repeats}
    print(f"machine: {report['machine']}")
    probabilities = mask_probabilities()
    reference, _ = plain_path(probabilities)
    ours, _, masks = our_path(probabilities)
    assert ours == reference, "encode_rle differs from the plain pycocotools path"
    assert encode_rle(masks) == encode_rle_reference(masks)
    coverage = float(masks.float().mean())
    runs = [len(r["counts"]) for r in ours]

    def measure(_: None) -> tuple[list[dict[str, float]], list[dict[str, float]], list[float], list[float]]:
        plain_runs, our_runs = [], []
        for repeat in range(args.repeats + 1):  # each first run is a warm-up (allocator, thread pools)
            plain = plain_path(probabilities)[1]
            measured = our_path(probabilities)[1]
            if repeat:
                plain_runs.append(plain)
                our_runs.append(measured)
        # The encoders alone, on the same bool masks.
        ref_s = [timed(lambda: encode_rle_reference(masks))[1] for _ in range(args.repeats + 1)][1:]
        our_s = [timed(lambda: encode_rle(masks))[1] for _ in range(args.repeats + 1)][1:]
        return plain_runs, our_runs, ref_s, our_s

    (plain_runs, our_runs, ref_s, our_s), other, _ = harness.measure_quietly(
        None, "(d)", lambda: None, measure, args.max_other_cores, args.retries
    )

    stages = ("upscale_threshold", "layout_copy", "encode")
    plain_p50 = {s: p50([r[s] for r in plain_runs]) for s in stages}
    our_p50 = {s: p50([r[s] for r in our_runs]) for s in stages}
    plain_total, our_total = p50([sum(r.values()) for r in plain_runs]), p50([sum(r.values()) for r in our_runs])

    def speedup(a: float, b: float) -> str:
        return f"{a / b:.1f}x" if b > 0 else "-"

    ms = 1000
    print(
        f"\n{INSTANCES} masks {LOW_RES}x{LOW_RES} -> {HEIGHT}x{WIDTH}, {coverage:.0%} of pixels set, "
        f"RLE strings {min(runs)}-{max(runs)} chars; RLEs byte-identical: yes; "
        f"other programs used {other:.2f} cores meanwhile"
    )
    print_table(
        f"(d) mask post-processing, p50 of {args.repeats} runs (ms)",
        ["stage", "plain (transformers + pycocotools)", "ours (chunked + encode_rle)", "speed-up"],
        [
            ["upscale + threshold", plain_p50["upscale_threshold"] * ms, our_p50["upscale_threshold"] * ms,
             speedup(plain_p50["upscale_threshold"], our_p50["upscale_threshold"])],
            ["layout copy ([H,W,N] Fortran uint8)", plain_p50["layout_copy"] * ms, "none", "-"],
            ["RLE encode", plain_p50["encode"] * ms, our_p50["encode"] * ms,
             speedup(plain_p50["encode"], our_p50["encode"])],
            ["total", plain_total * ms, our_total * ms, speedup(plain_total, our_total)],
        ],
    )
    float_bytes = 4 * HEIGHT * WIDTH
    print(
        f"float scratch of the upscale: plain {INSTANCES * float_bytes / 2**20:.0f} MiB (all at once), "
        f"ours {_MASK_UPSAMPLE_CHUNK * float_bytes / 2**20:.0f} MiB (chunks of {_MASK_UPSAMPLE_CHUNK})"
    )
    print_table(
        "(d') the encoders alone on the same bool masks (ms)",
        ["encoder", "p50", "min"],
        [
            ["encode_rle_reference (copy + pycocotools)", p50(ref_s) * ms, min(ref_s) * ms],
            ["encode_rle", p50(our_s) * ms, min(our_s) * ms],
            ["speed-up", f"{p50(ref_s) / p50(our_s):.1f}x", f"{min(ref_s) / min(our_s):.1f}x"],
        ],
    )
    report.update(
        plain=plain_runs, ours=our_runs, encode_reference=ref_s, encode_ours=our_s,
        coverage=coverage, other_cores=other,
    )

    model: dict[str, Any] | None = None
    if args.model_seconds is not None:
        model = {"features": args.model_seconds, "prompt": 0.0, "source": "--model-seconds"}
    elif args.image_api_json is not None:
        model = {**model_seconds_from_json(args.image_api_json), "source": str(args.image_api_json)}
    elif args.measure_full is not None:
        measured, _, _ = harness.measure_quietly(
            None, "model time", lambda: None, lambda _: model_seconds_full(args.measure_full),
            args.max_other_cores, args.retries,
        )
        model = {**measured, "source": f"full-size random SAM3 at {args.measure_full} px, measured now"}
    if model is not None:
        per_image = model["features"] + model["prompt"]
        print_table(
            f"(d'') post-processing vs the model's own time per image ({model['source']})",
            ["", "seconds", "share of model time"],
            [
                ["model: backbone + one text prompt", per_image, "100%"],
                ["  of which one text prompt", model["prompt"], f"{model['prompt'] / per_image:.0%}"],
                ["plain post-processing, 100 masks 1080p", plain_total, f"{plain_total / per_image:.1%}"],
                ["our post-processing, 100 masks 1080p", our_total, f"{our_total / per_image:.1%}"],
            ],
        )
        report["model"] = model
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"raw figures: {args.json}")


if __name__ == "__main__":
    sys.exit(main())
