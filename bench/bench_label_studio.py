"""Label Studio clicks on one image, through Label Studio's own interactive call (its frontend's
smart-tool request: Label Studio -> our /label-studio/predict -> Label Studio), timed by its caller.

Compared in the same run:
  first  the first click on a task: the image fetched from Label Studio, checked, kept; its features computed;
  later  the following clicks on that task: the kept image, the features from the model's feature cache;
  no cache  the same later clicks on a second server with ENABLE_FEATURE_CACHE=false: every click
         recomputes the image embedding, as Label Studio's SAM2 example backend does.
Each row: round trip at Label Studio's API (p50, p90) and our server's own compute (info.compute_ms, p50).

Starts Label Studio (.venv/label-studio, as .ci/run installs it) and two embedded SAM3 servers
(`manage.py serve`, SQLite, the model in process) on free ports of 127.0.0.1; stops them at the end.
Usage: .venv/bin/python bench/bench_label_studio.py [--model tiny|full] [--resolution 224] [--clicks 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/x.py`
    sys.path.insert(0, str(ROOT))

from bench.checkpoints import ensure_checkpoint  # noqa: E402
from bench.harness import percentile  # noqa: E402
from tests.labelstudio.label_studio import IMAGE_CONFIG, PHOTOS, Backend, LabelStudio, start_label_studio, start_sam3_backend  # noqa: E402
from tests.processes import stop_process_group  # noqa: E402

PHOTO_NAMES = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg")


def click(studio: LabelStudio, backend_id: int, task: int, n: int) -> tuple[float, dict[str, Any]]:
    """One positive smart-keypoint click (moving a little each time), timed at Label Studio's API."""
    point = {
        "type": "keypointlabels", "from_name": "click", "to_name": "image", "is_positive": True,
        "value": {"x": 30 + (n * 7) % 40, "y": 30 + (n * 11) % 40, "width": 0.5, "keypointlabels": ["Cat"]},
    }
    started = time.perf_counter()
    answer = studio.interactive(backend_id, task, {"result": [point]})
    elapsed = (time.perf_counter() - started) * 1000
    if "data" not in answer:
        raise RuntimeError(f"Label Studio answered {answer}")
    return elapsed, answer["data"]["info"]


def measure(studio: LabelStudio, backend: Backend, clicks: int) -> dict[str, list[dict[str, Any]]]:
    project = studio.create_project(f"bench {backend.server.url}", IMAGE_CONFIG)
    tasks = studio.import_files(project, *(PHOTOS / name for name in PHOTO_NAMES))
    connected = studio.connect(project, backend.url, backend.key)
    connected.raise_for_status()
    backend_id = connected.json()["id"]
    rows: dict[str, list[dict[str, Any]]] = {"first": [], "later": []}
    for task in tasks:
        for n in range(clicks + 1):
            elapsed, info = click(studio, backend_id, task["id"], n)
            rows["first" if n == 0 else "later"].append({"round_trip_ms": elapsed, **info})
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    trips = [row["round_trip_ms"] for row in rows]
    computes = [row["compute_ms"] for row in rows if row.get("compute_ms") is not None]
    return {
        "clicks": len(rows), "round_trip_p50_ms": percentile(trips, 50), "round_trip_p90_ms": percentile(trips, 90),
        "compute_p50_ms": statistics.median(computes) if computes else float("nan"),
        "media_fetched": sum(not row["media_cached"] for row in rows), "feature_cache_hits": sum(bool(row["cache_hit"]) for row in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--resolution", type=int, default=224, help="the full model's input size (published: 1008)")
    parser.add_argument("--clicks", type=int, default=20, help="clicks after the first, per task (3 tasks)")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    checkpoint = ensure_checkpoint(args.model)
    env = {"IMAGE_MODEL_DEVICE": "cpu", "VIDEO_MODEL_ENABLED": "false", "RATE_LIMIT_ENABLED": "false", "LOG_LEVEL": "WARNING"}
    if args.model == "full":
        env["IMAGE_MODEL_RESOLUTION"] = str(args.resolution)
    started = []
    with tempfile.TemporaryDirectory(prefix="sam3-bench-label-studio-") as directory:
        base = Path(directory)
        try:
            (base / "ls").mkdir()
            studio = start_label_studio(base / "ls")
            started.append(studio.process)
            results = {}
            for name, extra in (("cache", {}), ("no cache", {"ENABLE_FEATURE_CACHE": "false"})):
                (base / name).mkdir()
                backend = start_sam3_backend(base / name, studio, checkpoint, **env, **extra)
                started.append(backend.server.process)
                results[name] = measure(studio, backend, args.clicks)
        finally:
            for process in started:
                stop_process_group(process)
    table = {
        "first click (fetch + features)": summary(results["cache"]["first"]),
        "later clicks (feature cache)": summary(results["cache"]["later"]),
        "later clicks, ENABLE_FEATURE_CACHE=false": summary(results["no cache"]["later"]),
    }
    print(f"\nmodel {args.model}" + (f" @ {args.resolution} px" if args.model == "full" else "") + ", 3 photos, Label Studio 1.23.2")
    print(f"{'':42} {'clicks':>6} {'trip p50':>9} {'trip p90':>9} {'compute p50':>12} {'fetched':>8} {'cache hits':>10}")
    for label, row in table.items():
        print(
            f"{label:42} {row['clicks']:6d} {row['round_trip_p50_ms']:8.1f}ms {row['round_trip_p90_ms']:8.1f}ms "
            f"{row['compute_p50_ms']:11.1f}ms {row['media_fetched']:8d} {row['feature_cache_hits']:10d}"
        )
    later, uncached = table["later clicks (feature cache)"], table["later clicks, ENABLE_FEATURE_CACHE=false"]
    print(f"\nlater click vs no feature cache: round trip x{uncached['round_trip_p50_ms'] / later['round_trip_p50_ms']:.2f}, "
          f"compute x{uncached['compute_p50_ms'] / later['compute_p50_ms']:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "summary": table, "raw": results}, indent=1))


if __name__ == "__main__":
    main()
