"""Live sessions: frames pushed over the websocket vs the model's own streaming call in-process.

Same frames (a moving square, JPEG), one object clicked on the first frame, on both paths:
  (a) in-process: ``LiveStream.push`` (transformers' streaming call per frame for the tracker, plus
      the state bound and post-processing) on the decoded frames: the model's frames per second;
  (b) server, closed loop: the client sends a frame, waits for its objects, sends the next:
      frames/s delivered and latency sent -> received (p50/p95), and the ratio to (a). (a) and (b)
      take turns frame by frame (the order flips every frame), so both see the same machine;
  (c) server, open loop at 2x the model's rate from (a): frames/s delivered, latency p50/p95 (it
      stays bounded: latest-wins, nothing queues) and how many frames the server skipped;
  (d) with --memory-frames N: the model worker's RSS while one live session (a text prompt and a
      clicked object) takes N frames pushed over the websocket (closed loop), every 100 frames, and
      the growth from frame 100 to the end.
(a)-(c) run --repeats times (3), each with new sessions; the ratios' medians come last.

    .venv/bin/python bench/bench_live.py --frames 60 --memory-frames 3000 --json /tmp/bench-live.json

The stack (``bench/harness.py``) runs on Postgres database ``sam3_bench_live`` and Redis database 11
(flushed at the start) unless --database / --redis-url say otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import harness  # bench/ is sys.path[0] when run as a script; harness puts the repo root on sys.path
import numpy as np
import requests
from bench_sessions import rss_bytes
from harness import CpuMeter, Stack, p50, p95, print_table
from websockets.sync.client import connect

WARMUP_FRAMES = 5


def make_frames(count: int, width: int, height: int) -> list[bytes]:
    frames = []
    for index in range(count):
        image = np.full((height, width, 3), 90, np.uint8)
        x = 20 + (index * 3) % (width - 80)
        image[40:100, x : x + 60] = (40, 40, 200)
        frames.append(cv2.imencode(".jpg", image)[1].tobytes())
    return frames


def frame_message(seq: int, jpeg: bytes) -> bytes:
    header = json.dumps({"seq": seq}).encode()
    return struct.pack(">I", len(header)) + header + jpeg


class LiveClient:
    """One live session's websocket with a reader thread: latency per computed seq, skipped seqs."""

    def __init__(self, stack: Stack, click: list[float], first: bytes) -> None:
        created = requests.post(f"{stack.url}/api/v1/sessions/", json={"live": True}, headers=stack.headers, timeout=60)
        created.raise_for_status()
        self.stack, self.session_id = stack, created.json()["id"]
        url = f"{stack.url.replace('http', 'ws')}/ws/sessions/{self.session_id}/live/"
        self.socket = connect(url, additional_headers=stack.headers, max_size=None)
        self.sent: dict[int, float] = {}
        self.received: dict[int, float] = {}
        self.skipped: list[int] = []
        self.arrived = threading.Condition()
        self.prompted = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        self.send(0, first)
        self.wait_for(0)
        self.socket.send(json.dumps({"type": "prompt", "seq": 0, "points": [click], "point_labels": [1]}))
        self.prompted.wait(60)

    def _read(self) -> None:
        for raw in self.socket:
            message = json.loads(raw)
            now = time.perf_counter()
            if message["type"] == "frame":
                self.socket.send('{"type": "ack"}')
            with self.arrived:
                if message["type"] == "frame":
                    self.received[message["seq"]] = now
                elif message["type"] == "skipped":
                    self.skipped += message["seqs"]
                elif message["type"] == "prompt_result":
                    self.prompted.set()
                self.arrived.notify_all()

    def send(self, seq: int, jpeg: bytes) -> None:
        self.sent[seq] = time.perf_counter()
        self.socket.send(frame_message(seq, jpeg))

    def wait_for(self, seq: int, timeout: float = 120) -> None:
        with self.arrived:
            if not self.arrived.wait_for(lambda: seq in self.received or seq in self.skipped, timeout):
                raise TimeoutError(f"no answer for frame {seq}")

    def close(self) -> None:
        self.socket.close()
        requests.delete(f"{self.stack.url}/api/v1/sessions/{self.session_id}/", headers=self.stack.headers, timeout=60)


def summary(client: LiveClient, seqs: list[int], elapsed: float) -> dict[str, Any]:
    latencies = [client.received[s] - client.sent[s] for s in seqs if s in client.received]
    skipped = [s for s in seqs if s in client.skipped]
    return {
        "sent": len(seqs), "delivered": len(latencies), "skipped": len(skipped), "fps_delivered": len(latencies) / elapsed,
        "latency_p50_ms": p50(latencies) * 1000, "latency_p95_ms": p95(latencies) * 1000, "latency_max_ms": max(latencies) * 1000,
        "latency_ms": {s: (client.received[s] - client.sent[s]) * 1000 for s in seqs if s in client.received},
    }


def closed_loop(stack: Stack, checkpoint: Path, frames: list[bytes], click: list[float]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(a) and (b), frame by frame in turns: the in-process stream's figures and the server's."""
    from inference.runtime.loader import load_sam3
    from inference.runtime.streaming import LiveStream
    from inference.video_sessions.live import KEEP_HISTORY_FRAMES
    from inference.video_sessions.streaming import decode_image

    images = [decode_image(f) for f in frames]
    stream = LiveStream(load_sam3(checkpoint, None, "cpu"), images[0], keep_history=KEEP_HISTORY_FRAMES)
    stream.push(images[0])
    stream.interactive_session().add_prompt(0, 10_000, points=[click], point_labels=[1])
    client = LiveClient(stack, click, frames[0])
    try:
        model_seconds: list[float] = []
        for seq in range(1, len(frames)):
            for path in ("model", "server") if seq % 2 else ("server", "model"):
                if path == "model":
                    started = time.perf_counter()
                    stream.push(images[seq])
                    if seq > WARMUP_FRAMES:
                        model_seconds.append(time.perf_counter() - started)
                else:
                    client.send(seq, frames[seq])
                    client.wait_for(seq)
        seqs = list(range(1 + WARMUP_FRAMES, len(frames)))
        server = summary(client, seqs, sum(client.received[s] - client.sent[s] for s in seqs if s in client.received))
    finally:
        client.close()
        stream.close()
    model = {"frames": len(model_seconds), "fps": len(model_seconds) / sum(model_seconds),
             "p50_ms": p50(model_seconds) * 1000, "p95_ms": p95(model_seconds) * 1000, "ms": [t * 1000 for t in model_seconds]}
    return model, server


def open_loop(stack: Stack, frames: list[bytes], click: list[float], rate: float) -> dict[str, Any]:
    client = LiveClient(stack, click, frames[0])
    try:
        seqs = list(range(1, len(frames)))
        started = time.perf_counter()
        for number, seq in enumerate(seqs):
            time.sleep(max(0.0, started + number / rate - time.perf_counter()))
            client.send(seq, frames[seq])
        client.wait_for(seqs[-1])
        return {"send_rate_fps": rate, **summary(client, seqs, time.perf_counter() - started)}
    finally:
        client.close()


def worker_rss_mb(stack: Stack) -> float:
    """RSS of the model worker: the largest process in the workers' process group (run_workers is a small supervisor)."""
    assert stack.workers is not None
    largest = 0
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if entry.name.isdigit() and int(fields[2]) == stack.workers.pid:
                largest = max(largest, rss_bytes(entry.name))
        except (OSError, IndexError):  # not a process, or it ended meanwhile
            continue
    return largest / 2**20


def memory_curve(stack: Stack, frames: list[bytes], count: int, click: list[float]) -> dict[str, Any]:
    client = LiveClient(stack, click, frames[0])
    try:
        client.socket.send(json.dumps({"type": "prompt", "seq": 0, "text": "dog"}))
        curve: dict[int, float] = {}
        started = time.perf_counter()
        for seq in range(1, count + 1):
            client.send(seq, frames[seq % len(frames)])
            client.wait_for(seq)
            if seq % 100 == 0:
                curve[seq] = worker_rss_mb(stack)
        growth = (curve[count] - curve[100]) / curve[100] * 100 if 100 in curve and count in curve else None
        return {"frames": count, "worker_rss_mb": curve, "growth_from_100_pct": growth, "skipped": len(client.skipped),
                "seconds": time.perf_counter() - started}
    finally:
        client.close()


def one_repeat(stack: Stack, checkpoint: Path, frames: list[bytes], click: list[float]) -> dict[str, Any]:
    meter = CpuMeter(stack)
    base, closed = closed_loop(stack, checkpoint, frames, click)
    fast = open_loop(stack, frames, click, 2 * base["fps"])
    return {"in_process": base, "server_closed_loop": closed, "server_2x": fast, "other_cores": meter.other_cores(),
            "ratio_closed_loop": closed["fps_delivered"] / base["fps"], "ratio_2x": fast["fps_delivered"] / base["fps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--database", default="sam3_bench_live")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--repeats", type=int, default=3, help="(a)-(c) this many times, each with new sessions")
    parser.add_argument("--memory-frames", type=int, default=0, help="also (d): RSS over this many pushed frames")
    parser.add_argument("--torch-threads", type=int, help="torch threads of the worker and of (a) (default: torch's, one per core)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.torch_threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)  # read by the workers' torch when they start
        torch.set_num_threads(args.torch_threads)
    harness.BENCH_DATABASE = args.database
    harness.DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{args.database}"
    harness.REDIS_URL = args.redis_url

    from bench.checkpoints import ensure_checkpoint

    checkpoint = ensure_checkpoint("tiny")
    frames = make_frames(args.frames + 1 + WARMUP_FRAMES, args.width, args.height)
    click = [50.0, 70.0]  # inside the square on the first frame
    results: dict[str, Any] = {"machine": harness.machine_info(), "frames": args.frames, "size": [args.width, args.height]}
    harness.ensure_database(args.database)
    with Stack(checkpoint) as stack:
        stack.start_workers()
        results["repeats"] = [one_repeat(stack, checkpoint, frames, click) for _ in range(args.repeats)]
        if args.memory_frames:
            meter = CpuMeter(stack)
            results["memory"] = memory_curve(stack, frames, args.memory_frames, click)
            results["memory"]["other_cores"] = meter.other_cores()
    rows = []
    for number, repeat in enumerate(results["repeats"], 1):
        base, closed, fast = repeat["in_process"], repeat["server_closed_loop"], repeat["server_2x"]
        rows += [
            [f"{number}: in-process LiveStream.push", base["fps"], base["p50_ms"], base["p95_ms"], "-", 1.0, repeat["other_cores"]],
            [f"{number}: server, closed loop (sent -> received)", closed["fps_delivered"], closed["latency_p50_ms"],
             closed["latency_p95_ms"], closed["skipped"], repeat["ratio_closed_loop"], ""],
            [f"{number}: server, sent at {fast['send_rate_fps']:.1f}/s (2x)", fast["fps_delivered"], fast["latency_p50_ms"],
             fast["latency_p95_ms"], f"{fast['skipped']}/{fast['sent']}", repeat["ratio_2x"], ""],
        ]
    print_table("Live push, tiny model (one clicked object)",
                ["repeat: path", "frames/s", "p50 ms", "p95 ms", "skipped", "ratio", "other cores"], rows)
    for key in ("ratio_closed_loop", "ratio_2x"):
        results[f"median_{key}"] = p50([r[key] for r in results["repeats"]])
    print(f"median ratio: closed loop {results['median_ratio_closed_loop']:.2f}, sent at 2x {results['median_ratio_2x']:.2f}")
    if args.memory_frames:
        memory = results["memory"]
        print_table("Model worker RSS, one live session (text prompt + clicked object), frames pushed over the websocket",
                    ["frames", "worker RSS MiB"], memory["worker_rss_mb"].items())
        print(f"growth from frame 100 to {args.memory_frames}: {memory['growth_from_100_pct']:+.2f} %"
              f" ({memory['seconds']:.0f} s, other programs used {memory['other_cores']:.2f} cores)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
