"""Image segmentation through the real server vs the same model called in-process.

Sections (each prints one table; --json writes the raw figures):
  (a) server overhead: end-to-end HTTP latency with the feature cache off (every request runs the
      backbone) vs features + text prompt + RLE encoding called in this process on the same images;
  (b) follow-up prompt on a cached image vs a cold image (feature cache on);
  (c) throughput at concurrency 1/4/8 with INFERENCE_MAX_BATCH_SIZE=1 and =8.

    .venv/bin/python bench/bench_image_api.py --model tiny --requests 30
    .venv/bin/python bench/bench_image_api.py --model full --resolution 224 --requests 10 --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import harness  # bench/ is sys.path[0] when run as a script; harness puts the repo root on sys.path
from harness import Stack, p50, p95, print_table

from bench.checkpoints import ensure_checkpoint

WARMUP_REQUESTS = 2  # first requests pay one-time costs (allocator growth, lazy imports, connections)
CONCURRENCY_LEVELS = (1, 4, 8)
BATCH_SIZES = (1, 8)
TEXT = "dog"
THRESHOLD = 0.0  # keep every query: a random-weight model scores ~0.25, and all masks get encoded


class Images:
    """Distinct images on demand: every request that must run the backbone gets one never seen before."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height, self.next_seed = width, height, 1

    def take(self, count: int) -> list[Any]:
        seeds = range(self.next_seed, self.next_seed + count)
        self.next_seed += count
        return [harness.random_image(self.width, self.height, seed) for seed in seeds]

    def upload(self, stack: Stack, count: int) -> tuple[list[Any], list[str]]:
        arrays = self.take(count)
        return arrays, stack.upload_many([harness.png_bytes(a) for a in arrays])


class InProcess:
    """The baseline: one request's model work called directly, as the worker does it."""

    def __init__(self, checkpoint: Path, resolution: int) -> None:
        import torch

        from inference.runtime.loader import load_sam3

        self.loaded = load_sam3(checkpoint, None, os.environ.get("IMAGE_MODEL_DEVICE", "cpu"), resolution=resolution)
        self.sync = torch.cuda.synchronize if self.loaded.device.type == "cuda" else (lambda: None)

    def __call__(self, image: Any) -> dict[str, float]:
        from inference.masks import encode_rle
        from inference.runtime.engine import compute_image_features, segment_concept

        started = time.perf_counter()
        features = compute_image_features(self.loaded, image)
        self.sync()
        featured = time.perf_counter()
        instances = segment_concept(self.loaded, features, text=TEXT, threshold=THRESHOLD)
        self.sync()
        segmented = time.perf_counter()
        encode_rle(instances.masks)
        finished = time.perf_counter()
        return {
            "seconds": finished - started,
            "features": featured - started,
            "prompt": segmented - featured,
            "encode": finished - segmented,
            "instances": len(instances),
        }

    def close(self) -> None:
        del self.loaded
        gc.collect()


def http_record(stack: Stack, session: Any, upload_id: str) -> dict[str, Any]:
    status, elapsed, body, size = stack.segment(session, upload_id, TEXT, THRESHOLD)
    if status != 200 or body is None:
        raise RuntimeError(f"segment request answered {status}")
    return {
        "seconds": elapsed,
        "cache_hit": body["cache_hit"],
        "timings_ms": body["timings_ms"],
        "instances": len(body["results"][0]["instances"]),
        "response_bytes": size,
    }


def worker_batch_stats(stack: Stack) -> tuple[float, float]:
    """(sum, count) of the workers' batch-size histogram, to derive the mean batch of a phase."""
    import requests

    text = requests.get(f"http://127.0.0.1:{stack.worker_env['WORKER_METRICS_PORT']}/metrics", timeout=5).text
    values: dict[str, float] = {}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in ("sam3_inference_batch_size_sum", "sam3_inference_batch_size_count"):
            values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return values.get("sam3_inference_batch_size_sum", 0.0), values.get("sam3_inference_batch_size_count", 0.0)


def ms(seconds: float) -> float:
    return seconds * 1000


def section_overhead(stack: Stack, args: argparse.Namespace, images: Images, checkpoint: Path) -> dict[str, Any]:
    import requests

    stack.start_workers(ENABLE_FEATURE_CACHE="false", INFERENCE_MAX_BATCH_SIZE="1")
    arrays, ids = images.upload(stack, WARMUP_REQUESTS + args.requests)  # cache off: a retry may reuse them
    baseline = InProcess(checkpoint, args.resolution)

    def run(_: None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[float], list[float]]:
        http: list[dict[str, Any]] = []
        base: list[dict[str, Any]] = []
        deadline = time.monotonic() + args.time_limit
        with requests.Session() as session:
            # Alternate HTTP and in-process on the same image, never at the same time (the worker
            # is idle while the baseline runs), so drift on this shared machine hits both alike.
            # The order flips each time so neither always runs first.
            for index, (array, upload_id) in enumerate(zip(arrays, ids)):
                if time.monotonic() > deadline:
                    print(f"  time limit reached after {index} images", file=sys.stderr)
                    break
                if index % 2 == 0:
                    h = http_record(stack, session, upload_id)
                    b = baseline(array)
                else:
                    b = baseline(array)
                    h = http_record(stack, session, upload_id)
                if index >= WARMUP_REQUESTS:
                    http.append(h)
                    base.append(b)
            # The fixed cost of an authenticated API call without inference, for the breakdown, and
            # of the lightest request the server answers (/healthz: no auth, no database), alternated.
            floor: list[float] = []
            health: list[float] = []
            for _ in range(min(20, args.requests)):
                for path, headers, times in (("/api/v1/me/", stack.headers, floor), ("/healthz", {}, health)):
                    started = time.perf_counter()
                    session.get(f"{stack.url}{path}", headers=headers, timeout=30).raise_for_status()
                    times.append(time.perf_counter() - started)
        return http, base, floor, health

    try:
        (http, base, floor, health), other, attempts = harness.measure_quietly(
            stack, "(a)", lambda: None, run, args.max_other_cores, args.retries
        )
    finally:
        baseline.close()
    assert not any(r["cache_hit"] for r in http), "cache hit with ENABLE_FEATURE_CACHE=false"

    http_s, base_s = [r["seconds"] for r in http], [r["seconds"] for r in base]
    paired = [h - b for h, b in zip(http_s, base_s)]  # same image, back to back: the fairest difference
    t = {key: [r["timings_ms"][key] for r in http] for key in ("queued", "compute", "postprocess", "total")}
    # Per request, from the server's own timings: what happens outside the model worker's compute.
    dispatch = [total - c - p - q for total, c, p, q in zip(t["total"], t["compute"], t["postprocess"], t["queued"])]
    outside_view = [ms(s) - total for s, total in zip(http_s, t["total"])]
    print_table(
        f"(a) server overhead: one request at a time, cache off, {len(http)} requests each way",
        ["path", "p50 ms", "p95 ms"],
        [
            ["in-process (features + prompt + RLE)", ms(p50(base_s)), ms(p95(base_s))],
            ["HTTP end to end (upload id)", ms(p50(http_s)), ms(p95(http_s))],
            ["HTTP / in-process", f"{p50(http_s) / p50(base_s):.2f}x", f"{p95(http_s) / p95(base_s):.2f}x"],
            ["HTTP - in-process (difference of the percentiles)", ms(p50(http_s) - p50(base_s)),
             ms(p95(http_s) - p95(base_s))],
            ["HTTP - in-process (per image, paired)", ms(p50(paired)), ms(p95(paired))],
        ],
    )
    print_table(
        "(a') where the time goes (p50 ms; server parts from the reply's timings_ms)",
        ["part", "in-process", "server"],
        [
            ["model: backbone + prompt (compute)", ms(p50([r["features"] + r["prompt"] for r in base])),
             p50(t["compute"])],
            ["  of which backbone", ms(p50([r["features"] for r in base])), "-"],
            ["RLE encoding (postprocess)", ms(p50([r["encode"] for r in base])), p50(t["postprocess"])],
            ["waiting in the worker (queued)", "-", p50(t["queued"])],
            ["dispatch: upload lookup, Celery + Redis, reply (total - the above)", "-", p50(dispatch)],
            ["HTTP, auth, quota, rendering (client time - total)", "-", p50(outside_view)],
            ["client wall time", ms(p50(base_s)), ms(p50(http_s))],
            ["for scale: GET /api/v1/me/ (auth + quota, no inference)", "-", ms(p50(floor))],
            ["for scale: GET /healthz (no auth, no database)", "-", ms(p50(health))],
            ["GET /api/v1/me/ / GET /healthz", "-", f"{p50(floor) / p50(health):.2f}x"],
        ],
    )
    instances = http[0]["instances"] if http else 0
    size = p50([r["response_bytes"] for r in http]) / 1024
    print(f"{instances} instances per request, response ~{size:.0f} KiB; other programs used {other:.2f} cores")
    return {
        "http": http, "in_process": base, "api_me_seconds": floor, "healthz_seconds": health, "other_cores": other,
        "attempts": attempts,
    }


def section_cache(stack: Stack, args: argparse.Namespace, images: Images) -> dict[str, Any]:
    import requests

    stack.start_workers(ENABLE_FEATURE_CACHE="true", INFERENCE_MAX_BATCH_SIZE="1")

    def run(ids: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        cold: list[dict[str, Any]] = []
        cached: list[dict[str, Any]] = []
        deadline = time.monotonic() + args.time_limit
        with requests.Session() as session:
            # Each image twice in a row: the first request computes and caches the backbone, the
            # second (the follow-up prompt) reuses it. The first pair is a warm-up.
            for index, upload_id in enumerate(ids):
                if time.monotonic() > deadline:
                    break
                pair = http_record(stack, session, upload_id), http_record(stack, session, upload_id)
                if index:
                    cold.append(pair[0])
                    cached.append(pair[1])
        return cold, cached

    # New images on every attempt: a retry must start cold again.
    (cold, cached), other, attempts = harness.measure_quietly(
        stack, "(b)", lambda: images.upload(stack, 1 + args.requests)[1], run, args.max_other_cores, args.retries
    )
    wrong = sum(r["cache_hit"] for r in cold) + sum(not r["cache_hit"] for r in cached)
    cold_s, cached_s = [r["seconds"] for r in cold], [r["seconds"] for r in cached]
    print_table(
        f"(b) follow-up prompt on a cached image vs a cold image, {len(cold)} pairs, cache on",
        ["request", "p50 ms", "p95 ms", "server compute p50 ms"],
        [
            ["cold (new image)", ms(p50(cold_s)), ms(p95(cold_s)), p50([r["timings_ms"]["compute"] for r in cold])],
            ["cached (same image again)", ms(p50(cached_s)), ms(p95(cached_s)),
             p50([r["timings_ms"]["compute"] for r in cached])],
            ["speed-up (cold / cached)", f"{p50(cold_s) / p50(cached_s):.1f}x",
             f"{p95(cold_s) / p95(cached_s):.1f}x", "-"],
        ],
    )
    print(f"other programs used {other:.2f} cores meanwhile")
    if wrong:
        print(f"WARNING: {wrong} requests had an unexpected cache_hit flag")
    return {"cold": cold, "cached": cached, "unexpected_cache_flags": wrong, "other_cores": other, "attempts": attempts}


def section_throughput(stack: Stack, args: argparse.Namespace, images: Images) -> dict[str, Any]:
    raw: list[dict[str, Any]] = []
    # Rounds run the two worker configurations in alternating order (1, 8, 8, 1, 1, 8, ...): a slow
    # drift of the machine's speed would otherwise always favour the configuration measured last.
    for round_index in range(args.rounds):
        for batch in BATCH_SIZES if round_index % 2 == 0 else BATCH_SIZES[::-1]:
            # Cache off and a new image per request: every request runs the backbone.
            stack.start_workers(ENABLE_FEATURE_CACHE="false", INFERENCE_MAX_BATCH_SIZE=str(batch))
            _, warmup_ids = images.upload(stack, WARMUP_REQUESTS)
            harness.run_load(stack, warmup_ids, 1, args.time_limit)
            for concurrency in CONCURRENCY_LEVELS:
                count = max(args.requests, 2 * concurrency)  # at least two waves, so batches can form

                def run(ids: list[str], concurrency: int = concurrency) -> tuple[harness.LoadResult, float]:
                    before = worker_batch_stats(stack)
                    result = harness.run_load(stack, ids, concurrency, args.time_limit)
                    after = worker_batch_stats(stack)
                    forwards = after[1] - before[1]
                    return result, (after[0] - before[0]) / forwards if forwards else float("nan")

                (result, mean_batch), other, attempts = harness.measure_quietly(
                    stack, f"(c) batch {batch} concurrency {concurrency}",
                    lambda count=count: images.upload(stack, count)[1], run, args.max_other_cores, args.retries,
                )
                raw.append(
                    {
                        "round": round_index, "max_batch_size": batch, **result.__dict__,
                        "throughput": result.throughput,
                        "other_cores": other, "attempts": attempts, "mean_batch": mean_batch,
                    }
                )

    rows, throughput = [], {}
    for batch in BATCH_SIZES:
        for concurrency in CONCURRENCY_LEVELS:
            runs = [r for r in raw if r["max_batch_size"] == batch and r["concurrency"] == concurrency]
            ok, wall = sum(r["ok"] for r in runs), sum(r["wall_seconds"] for r in runs)
            latencies = [x for r in runs for x in r["latencies"]]
            throughput[(batch, concurrency)] = ok / wall
            rows.append(
                [
                    batch, concurrency, sum(r["sent"] for r in runs), ok, sum(sum(r["non_200"].values()) for r in runs),
                    ok / wall, " / ".join(f"{r['throughput']:.2f}" for r in runs),
                    ms(p50(latencies)), ms(p95(latencies)),
                    p50([r["mean_batch"] for r in runs]), max(r["other_cores"] for r in runs),
                ]
            )
    print_table(
        f"(c) throughput, a new image per request, cache off, {args.rounds} round(s)",
        ["max batch", "concurrency", "sent", "200", "non-200", "req/s", "req/s per round", "p50 ms", "p95 ms",
         "mean batch", "other cores (max)"],
        rows,
    )
    gains = {c: throughput[(8, c)] / throughput[(1, c)] for c in CONCURRENCY_LEVELS}
    best = max(gains[c] for c in CONCURRENCY_LEVELS if c > 1)
    # Within 5% is what repeated rounds on this machine disagree by: call that no gain.
    verdict = f"helps, by up to {best - 1:.0%}" if best > 1.05 else "does not help (within 5%)"
    print(
        "throughput with max batch 8 / max batch 1: "
        + ", ".join(f"concurrency {c}: {g:.2f}x" for c, g in gains.items())
        + f" -> batching {verdict} on this machine"
    )
    return {"runs": raw, "batch8_over_batch1": gains, "verdict": verdict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--resolution", type=int, default=224, help="model input size (the published model: 1008)")
    parser.add_argument("--requests", type=int, default=30, help="measured requests per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of section (c); even counts cancel drift")
    parser.add_argument("--image-size", default="640x480", help="WIDTHxHEIGHT of the generated images")
    parser.add_argument("--sections", default="abc", help="which sections to run, e.g. 'a' or 'bc'")
    parser.add_argument("--time-limit", type=float, default=600, help="seconds a request loop may send for")
    parser.add_argument("--request-timeout", type=float, default=600, help="client timeout, INFERENCE_TIMEOUT_SECONDS")
    parser.add_argument("--max-other-cores", type=float, default=0.2,
                        help="retry a measurement during which other programs used more cores than this")
    parser.add_argument("--retries", type=int, default=2, help="retries of a measurement disturbed by other programs")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()

    width, height = (int(v) for v in args.image_size.lower().split("x"))
    checkpoint = ensure_checkpoint(args.model)
    report: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        | {"checkpoint": str(checkpoint), "text": TEXT, "threshold": THRESHOLD},
        "machine": harness.machine_info(),
    }
    print(f"model {args.model} at {args.resolution} px, {width}x{height} images, {args.requests} requests each")
    print(f"machine: {report['machine']}")
    started = time.perf_counter()
    images = Images(width, height)
    with Stack(checkpoint, resolution=args.resolution, request_timeout=args.request_timeout) as stack:
        if "a" in args.sections:
            report["overhead"] = section_overhead(stack, args, images, checkpoint)
        if "b" in args.sections:
            report["cache"] = section_cache(stack, args, images)
        if "c" in args.sections:
            report["throughput"] = section_throughput(stack, args, images)
    report["wall_seconds"] = time.perf_counter() - started
    report["load_average_end"] = os.getloadavg()
    print(f"\nfinished in {report['wall_seconds']:.0f} s; load average at the end {report['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"raw figures: {args.json}")


if __name__ == "__main__":
    main()
