"""Live sessions: frames pushed over the websocket vs the model's own streaming call in-process.

Same frames (a moving square, JPEG), one object clicked on the first frame, on both paths:
  (a) in-process: ``LiveStream.push`` (transformers' streaming call per frame for the tracker, plus
      the state bound and post-processing) on the decoded frames: the model's frames per second;
  (b) server, closed loop: the client sends a frame, waits for its objects, sends the next:
      frames/s delivered and latency sent -> received (p50/p95), and the ratio to (a);
  (c) server, open loop at 2x the model's rate from (a): frames/s delivered, latency p50/p95 (it
      stays bounded: latest-wins, nothing queues) and how many frames the server skipped;
  (d) with --memory-frames N: this process's RSS while ``StreamSession.push`` (a text prompt and a
      clicked object) takes N frames, every 100 frames, and the growth from frame 100 to the end.

    .venv/bin/python bench/bench_live.py --frames 60 --json /tmp/bench-live.json

The stack (``bench/harness.py``) runs on Postgres database ``sam3_bench_live`` and Redis database 11
(flushed at the start) unless --database / --redis-url say otherwise.
"""

from __future__ import annotations

import argparse
import json
import struct
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import harness  # bench/ is sys.path[0] when run as a script; harness puts the repo root on sys.path
import numpy as np
import requests
from harness import Stack, p50, p95, print_table
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


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def memory_curve(checkpoint: Path, frames: list[bytes], count: int, click: list[float]) -> dict[str, Any]:
    from inference.live_frames import LiveFrame
    from inference.messages import VideoPrompt
    from inference.runtime.loader import load_sam3
    from inference.video_sessions.streaming import StreamSession, decode_image

    live = StreamSession(load_sam3(checkpoint, None, "cpu"), store=False, mask_format="rle")
    live.prompt(VideoPrompt(kind="text", frame=0, text="dog"))
    images = [decode_image(f) for f in frames]
    curve: dict[int, float] = {}
    started = time.perf_counter()
    for seq in range(count):
        live.push(LiveFrame(seq, b""), images[seq % len(images)])
        if seq == 0:
            live.prompt(VideoPrompt(kind="points", frame=0, points=[click], point_labels=[1]))
        if (seq + 1) % 100 == 0:
            curve[seq + 1] = rss_mb()
    growth = (curve[count] - curve[100]) / curve[100] * 100 if 100 in curve and count in curve else None
    return {"frames": count, "rss_mb": curve, "growth_from_100_pct": growth, "seconds": time.perf_counter() - started}


def frame_message(seq: int, jpeg: bytes) -> bytes:
    header = json.dumps({"seq": seq}).encode()
    return struct.pack(">I", len(header)) + header + jpeg


def in_process(checkpoint: Path, frames: list[bytes], click: list[float]) -> dict[str, Any]:
    from inference.runtime.loader import load_sam3
    from inference.runtime.streaming import LiveStream
    from inference.video_sessions.live import KEEP_HISTORY_FRAMES
    from inference.video_sessions.streaming import decode_image

    loaded = load_sam3(checkpoint, None, "cpu")
    images = [decode_image(f) for f in frames]
    stream = LiveStream(loaded, images[0], keep_history=KEEP_HISTORY_FRAMES)
    stream.push(images[0])
    stream.interactive_session().add_prompt(0, 10_000, points=[click], point_labels=[1])
    for image in images[1 : 1 + WARMUP_FRAMES]:
        stream.push(image)
    times = []
    for image in images[1 + WARMUP_FRAMES :]:
        started = time.perf_counter()
        stream.push(image)
        times.append(time.perf_counter() - started)
    return {"frames": len(times), "fps": len(times) / sum(times), "p50_ms": p50(times) * 1000, "p95_ms": p95(times) * 1000}


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
    }


def closed_loop(stack: Stack, frames: list[bytes], click: list[float]) -> dict[str, Any]:
    client = LiveClient(stack, click, frames[0])
    try:
        for seq in range(1, 1 + WARMUP_FRAMES):
            client.send(seq, frames[seq])
            client.wait_for(seq)
        seqs = list(range(1 + WARMUP_FRAMES, len(frames)))
        started = time.perf_counter()
        for seq in seqs:
            client.send(seq, frames[seq])
            client.wait_for(seq)
        return summary(client, seqs, time.perf_counter() - started)
    finally:
        client.close()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--database", default="sam3_bench_live")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/11")
    parser.add_argument("--memory-frames", type=int, default=0, help="also (d): RSS over this many pushed frames")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
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
        results["in_process"] = in_process(checkpoint, frames, click)
        results["server_closed_loop"] = closed_loop(stack, frames, click)
        results["server_2x"] = open_loop(stack, frames, click, 2 * results["in_process"]["fps"])
    base, closed, fast = results["in_process"], results["server_closed_loop"], results["server_2x"]
    results["ratio_closed_loop"] = closed["fps_delivered"] / base["fps"]
    print_table(
        "Live push, tiny model (one clicked object)", ["path", "frames/s", "p50 ms", "p95 ms", "skipped", "ratio"],
        [
            ["in-process LiveStream.push", base["fps"], base["p50_ms"], base["p95_ms"], "-", 1.0],
            ["server, closed loop (sent -> received)", closed["fps_delivered"], closed["latency_p50_ms"],
             closed["latency_p95_ms"], closed["skipped"], results["ratio_closed_loop"]],
            [f"server, sent at {fast['send_rate_fps']:.1f}/s (2x)", fast["fps_delivered"], fast["latency_p50_ms"],
             fast["latency_p95_ms"], f"{fast['skipped']}/{fast['sent']}", fast["fps_delivered"] / base["fps"]],
        ],
    )
    if args.memory_frames:
        memory = results["memory"] = memory_curve(checkpoint, frames, args.memory_frames, click)
        print_table("RSS of an in-process live stream (text prompt + clicked object)", ["frames", "RSS MB"], memory["rss_mb"].items())
        print(f"growth from frame 100 to {args.memory_frames}: {memory['growth_from_100_pct']:.2f} %")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
