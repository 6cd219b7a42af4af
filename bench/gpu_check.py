"""One prepared check for a lent GPU: the full-size SAM3 in bfloat16, as the server runs it.

    # On the GPU machine (docs/benchmarks-gpu.md has the exact command, with the install):
    .venv/bin/python bench/gpu_check.py --out OUT
    # On any machine, in seconds (.ci/run runs it so the script never rots): tiny model, CPU
    .venv/bin/python bench/gpu_check.py --dry-run --out OUT

Sections, each with its own figures or its error in the report (one failing section does not
stop the others), in this order so the cheap and essential ones come first:
  environment    device, driver, torch, CUDA, transformers
  correctness    tiny model: bfloat16 vs float32 masks (IoU distribution; clicks and concepts);
                 Meta's mask post-processing on the device equal to the CPU one
  image          full model in-process: cold request (backbone) and cached follow-up, p50/p95;
                 backbone batches of 1/4/8 images, images/s
  video          full model in-process: propagation frames/s with 1, 5 and 20 clicked objects;
                 GPU memory per session and its growth over a long video; VIDEO_STATE_DEVICE model vs cpu
  compile        torch.compile of the image backbone: compile time, steady-state gain
  server_image   bench_image_api.py: the same through `run_workers` + `serve` (server/in-process ratio,
                 batching through INFERENCE_MAX_BATCH_SIZE)
  server_video   bench_sessions.py: propagation over the websocket vs the in-process iterator
A section not started before ``--budget`` seconds is reported as skipped. Writes OUT/gpu-check.json
and OUT/gpu-check.md (the tables docs/benchmarks-gpu.md takes). No download: the full model is the
published architecture with random weights (bench/checkpoints.py), timings need no trained weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness  # noqa: F401 - puts the repository root on sys.path
import numpy as np
from harness import p50, p95

from bench.checkpoints import PUBLISHED_RESOLUTION, ensure_checkpoint

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = sorted((ROOT / "tests" / "checkpoints" / "images").glob("*.jpg"))


class Check:
    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        self.args = args
        self.dry = args.dry_run
        self.device = "cpu" if self.dry else args.device
        self.model = "tiny" if self.dry else "full"
        self.resolution = None if self.dry else PUBLISHED_RESOLUTION
        self.repeats = 3 if self.dry else args.repeats
        self.deadline = time.monotonic() + args.budget
        self.torch = torch
        self._loaded: Any = None

    # --- helpers ---

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def timed(self, function: Callable[[], object], repeats: int | None = None) -> list[float]:
        function()  # warm-up: first calls allocate and pick kernels
        self.sync()
        samples = []
        for _ in range(repeats or self.repeats):
            started = time.perf_counter()
            function()
            self.sync()
            samples.append((time.perf_counter() - started) * 1000)
        return samples

    def loaded(self) -> Any:
        """The model under test on the device (bfloat16 on a GPU that has it), loaded once."""
        from inference.runtime.loader import load_sam3

        if self._loaded is None:
            started = time.perf_counter()
            self._loaded = load_sam3(ensure_checkpoint(self.model), None, self.device, resolution=self.resolution)
            self.load_seconds = time.perf_counter() - started
        return self._loaded

    def image(self, index: int, size: tuple[int, int] = (640, 480)) -> np.ndarray:
        from PIL import Image

        photo = Image.open(PHOTOS[index % len(PHOTOS)]).convert("RGB").resize(size)
        return np.asarray(photo)

    def memory_mib(self) -> float | None:
        return self.torch.cuda.memory_allocated() / 2**20 if self.device.startswith("cuda") else None

    # --- sections ---

    def environment(self) -> dict[str, Any]:
        import transformers

        torch = self.torch
        info: dict[str, Any] = {
            "device": self.device, "model": self.model, "torch": torch.__version__, "cuda": torch.version.cuda,
            "transformers": transformers.__version__, "python": platform.python_version(), "dry_run": self.dry,
        }
        if self.device.startswith("cuda"):
            properties = torch.cuda.get_device_properties(self.device)
            info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                        bf16=torch.cuda.is_bf16_supported())
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, check=False)
            info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
        return info

    def correctness(self) -> dict[str, Any]:
        from inference.runtime import engine
        from inference.runtime.loader import load_sam3
        from inference.runtime.mask_postprocessing import connected_components, generic_nms

        torch = self.torch
        tiny = ensure_checkpoint("tiny")
        half, full = load_sam3(tiny, None, self.device), load_sam3(tiny, None, self.device, half=False)
        ious: list[float] = []
        for index in range(len(PHOTOS) * 2):
            image = self.image(index, (320, 240))
            low, high = engine.compute_image_features(half, image), engine.compute_image_features(full, image)
            point = [(40 + 60 * index) % 300, (30 + 45 * index) % 220]
            pairs = [(engine.segment_interactive(half, low, points=[point]).masks[0],
                      engine.segment_interactive(full, high, points=[point]).masks[0])]
            concept_low = engine.segment_concept(half, low, text="dog", threshold=0.0).masks[:5]
            concept_high = engine.segment_concept(full, high, text="dog", threshold=0.0).masks[:5]
            pairs += list(zip(concept_low, concept_high))
            for a, b in pairs:
                union = (a | b).sum().item()
                ious.append(1.0 if union == 0 else (a & b).sum().item() / union)
        generator = torch.Generator().manual_seed(0)
        masks = torch.rand(8, 1, 288, 288, generator=generator) < 0.5
        ious_matrix = torch.rand(50, 50, generator=generator)
        scores = torch.rand(50, generator=generator)
        device = torch.device(self.device)
        labels_cpu, sizes_cpu = connected_components(masks)
        labels_dev, sizes_dev = connected_components(masks.to(device))
        same_cc = torch.equal(labels_cpu, labels_dev.cpu()) and torch.equal(sizes_cpu, sizes_dev.cpu())
        same_nms = torch.equal(generic_nms(ious_matrix, scores, 0.3), generic_nms(ious_matrix.to(device), scores.to(device), 0.3).cpu())
        values = np.array(ious)
        return {
            "dtype_low": str(half.dtype), "dtype_reference": str(full.dtype), "masks_compared": len(ious),
            "iou_p50": float(np.median(values)), "iou_p5": float(np.percentile(values, 5)), "iou_min": float(values.min()),
            "postprocessing_device_equals_cpu": bool(same_cc and same_nms),
        }

    def image_section(self) -> dict[str, Any]:
        from inference.runtime import engine

        loaded = self.loaded()
        images = [self.image(i) for i in range(8)]
        cycle = iter(range(10**6))
        cold = self.timed(lambda: engine.segment_concept(
            loaded, engine.compute_image_features(loaded, images[next(cycle) % 8], include_tracker=False), text="dog", threshold=0.5))
        features = engine.compute_image_features(loaded, images[0])
        cached = self.timed(lambda: engine.segment_concept(loaded, features, text="dog", threshold=0.5))
        click = self.timed(lambda: engine.segment_interactive(loaded, features, points=[(320, 240)]))
        batches = {}
        for size in (1, 4, 8):
            samples = self.timed(lambda size=size: engine.compute_image_features_batch(loaded, images[:size]), max(2, self.repeats // 2))
            batches[str(size)] = size / (p50(samples) / 1000)
        return {
            "load_seconds": round(self.load_seconds, 1), "dtype": str(loaded.dtype), "resolution": loaded.resolution,
            "cold_ms_p50": p50(cold), "cold_ms_p95": p95(cold), "cached_text_ms_p50": p50(cached), "cached_text_ms_p95": p95(cached),
            "cached_click_ms_p50": p50(click), "backbone_images_per_s": batches,
        }

    def compile_section(self) -> dict[str, Any]:
        from inference.runtime import engine
        from inference.runtime.loader import load_sam3

        image = self.image(1)
        eager = self.timed(lambda: engine.compute_image_features(self.loaded(), image, include_tracker=False))
        compiled = load_sam3(ensure_checkpoint(self.model), None, self.device, resolution=self.resolution, compile=True)
        started = time.perf_counter()
        engine.compute_image_features(compiled, image, include_tracker=False)
        self.sync()
        first_call = time.perf_counter() - started
        steady = self.timed(lambda: engine.compute_image_features(compiled, image, include_tracker=False))
        return {"compile_first_call_s": round(first_call, 1), "backbone_eager_ms_p50": p50(eager),
                "backbone_compiled_ms_p50": p50(steady), "speedup": p50(eager) / p50(steady)}

    def video_section(self) -> dict[str, Any]:
        from inference.runtime.video import InteractiveVideoSession

        torch = self.torch
        loaded = self.loaded()
        frames_short = 6 if self.dry else 60
        frames_long = 12 if self.dry else self.args.long_frames
        base = self.image(2)
        video = [np.roll(base, 4 * i, axis=1) for i in range(frames_long)]
        height, width = base.shape[:2]
        result: dict[str, Any] = {"frames": frames_short, "objects": {}}
        for objects in (1, 5, 20):
            session = InteractiveVideoSession(loaded, video[:frames_short], keep_history=32)
            for obj in range(objects):
                session.add_prompt(0, obj + 1, points=[((37 + 97 * obj) % width, (23 + 61 * obj) % height)])
            self.sync()
            started = time.perf_counter()
            count = sum(1 for _ in session.propagate())
            self.sync()
            result["objects"][str(objects)] = {"frames_per_s": count / (time.perf_counter() - started)}
            session.reset()
            del session
        result["memory"] = {}
        for state_device in ("model", "cpu"):
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            before = self.memory_mib()
            session = InteractiveVideoSession(loaded, video, keep_history=32, state_device=None if state_device == "model" else "cpu")
            session.add_prompt(0, 1, points=[(width // 2, height // 2)])
            at: dict[int, float | None] = {}
            started = time.perf_counter()
            for index, _ in session.propagate():
                if index in (min(100, frames_long // 2), frames_long - 1):
                    at[index] = self.memory_mib()
            self.sync()
            seconds = time.perf_counter() - started
            early, late = (at.get(min(100, frames_long // 2)), at.get(frames_long - 1))
            result["memory"][state_device] = {
                "frames": frames_long, "frames_per_s": frames_long / seconds,
                "session_mib": None if before is None or late is None else late - before,
                "growth_mib_after_frame_100": None if early is None or late is None else late - early,
                "peak_mib": torch.cuda.max_memory_allocated() / 2**20 if self.device.startswith("cuda") else None,
            }
            session.reset()
            del session
        return result

    def _bench(self, script: str, args: list[str], name: str) -> dict[str, Any]:
        out = self.args.out / f"{name}.json"
        env = {**os.environ, "IMAGE_MODEL_DEVICE": self.device}
        seconds = max(30.0, self.deadline - time.monotonic())
        done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args, "--json", str(out)],
                              env=env, capture_output=True, text=True, timeout=seconds, check=False)
        (self.args.out / f"{name}.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"{script} exited {done.returncode}: {(done.stdout + done.stderr)[-1500:]}")
        return json.loads(out.read_text())

    def server_image(self) -> dict[str, Any]:
        if self.dry:  # sections a and b: c restarts the workers per batch size (a minute on a CPU)
            args = ["--model", "tiny", "--requests", "3", "--rounds", "1", "--sections", "ab", "--max-other-cores", "99", "--retries", "0"]
        else:
            args = ["--model", "full", "--resolution", str(PUBLISHED_RESOLUTION), "--requests", "20", "--rounds", "1",
                    "--image-size", "1280x960", "--max-other-cores", "99", "--retries", "0", "--request-timeout", "120"]
        return self._bench("bench_image_api.py", args, "server_image")

    def server_video(self) -> dict[str, Any]:
        if self.dry:
            args = ["--model", "tiny", "--frames", "8", "--repeats", "1", "--sections", "t", "--max-other-cores", "99", "--retries", "0"]
        else:
            args = ["--model", "full", "--resolution", str(PUBLISHED_RESOLUTION), "--frames", "60", "--repeats", "1",
                    "--sections", "t", "--max-other-cores", "99", "--retries", "0"]
        return self._bench("bench_sessions.py", args, "server_video")


SECTIONS: dict[str, Callable[[Check], dict[str, Any]]] = {
    "environment": Check.environment, "correctness": Check.correctness, "image": Check.image_section,
    "video": Check.video_section, "compile": Check.compile_section,
    "server_image": Check.server_image, "server_video": Check.server_video,
}


def markdown(report: dict[str, Any]) -> str:
    """The headline figures as tables (the raw ones are in the JSON)."""
    def fmt(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = [f"Run {report['started']}, {report['seconds']:.0f} s.", ""]
    for name, section in report["sections"].items():
        lines += [f"#### {name}", ""]
        if "error" in section or "skipped" in section:
            lines += [f"{'error' if 'error' in section else 'skipped'}: {section.get('error') or section.get('skipped')}", ""]
            continue
        flat: dict[str, Any] = {}
        for key, value in section.items():
            if isinstance(value, dict):
                for inner, item in value.items():
                    if isinstance(item, dict):
                        flat.update({f"{key}.{inner}.{k}": v for k, v in item.items() if not isinstance(v, dict | list)})
                    elif not isinstance(item, list):
                        flat[f"{key}.{inner}"] = item
            elif not isinstance(value, list):
                flat[key] = value
        lines += ["| figure | value |", "|---|---|", *[f"| {k} | {fmt(v)} |" for k, v in list(flat.items())[:40]], ""]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu-check.json, gpu-check.md and the benches' logs")
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU, a few repeats: checks the script runs")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {','.join(SECTIONS)}")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--long-frames", type=int, default=1000, help="video length for the memory growth (default 1000)")
    parser.add_argument("--budget", type=float, default=420, help="no section starts after this many seconds")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    check = Check(args)
    started = time.monotonic()
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "sections": {}}
    failed = False
    for name in args.sections.split(","):
        if args.dry_run and name == "compile":
            report["sections"][name] = {"skipped": "dry run (torch.compile alone takes ~35 s on a 2-core CPU)"}
            continue
        if time.monotonic() > check.deadline:
            report["sections"][name] = {"skipped": f"time budget ({args.budget:.0f} s) spent"}
            continue
        section_started = time.monotonic()
        try:
            figures = SECTIONS[name](check)
            figures["section_seconds"] = round(time.monotonic() - section_started, 1)
            report["sections"][name] = figures
        except Exception as error:  # noqa: BLE001 - report it, go on with the other sections
            failed = True
            report["sections"][name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
            traceback.print_exc()
        print(f"{name}: {json.dumps(report['sections'][name], default=str)[:600]}", flush=True)
        report["seconds"] = time.monotonic() - started
        (args.out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")  # kept if killed later
    report["seconds"] = time.monotonic() - started
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (args.out / "gpu-check.md").write_text(markdown(report) + "\n")
    print(markdown(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
