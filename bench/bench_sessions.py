"""Video sessions through the real server vs SAM3's own video iterator called in-process.

Sections (each prints tables; --json writes the raw figures):
  (t) throughput and latency: one click-prompted object propagated forward through an N-frame
      video over the websocket (upload -> POST /api/v1/sessions/ -> ws prompt -> ws propagate ->
      `frame` messages -> `done`) vs ``InteractiveVideoSession.propagate`` + ``encode_rle`` in this
      process on the same video and click: frames per second, first-frame latency, the server's
      overhead per frame, and whether both produce the same masks. The client acknowledges each
      frame (`{"type": "ack"}`) as docs/video-sessions.md asks; --no-ack measures without. Also
      the model worker's RSS before / during / after a session.
  (m) memory per session against video length, each measurement in a fresh subprocess: what the
      server does (lazy ``VideoFrames``, ``keep_history=32``) vs transformers' default behaviour
      (every frame decoded up front, all tracking state kept; optionally also every frame
      preprocessed up front, as ``init_video_session(video=...)`` does).

    .venv/bin/python bench/bench_sessions.py --model tiny --frames 80 --json /tmp/bench-video-tiny.json
    .venv/bin/python bench/bench_sessions.py --model full --frames 16 --json /tmp/bench-video-full.json

The stack (``bench/harness.py``) runs on Postgres database ``sam3_bench_video`` and Redis database
12 (flushed at the start), on free ports of 127.0.0.1; everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import harness  # bench/ is sys.path[0] when run as a script; harness puts the repo root on sys.path
import numpy as np
from harness import Stack, p50, print_table

from bench.checkpoints import ensure_checkpoint

# This benchmark's own databases: the tests use Redis 15 / test_sam3, the image benchmark 13 / sam3_bench.
VIDEO_DATABASE = "sam3_bench_video"
VIDEO_REDIS_URL = "redis://127.0.0.1:6379/12"
harness.BENCH_DATABASE = VIDEO_DATABASE
harness.DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{VIDEO_DATABASE}"
harness.REDIS_URL = VIDEO_REDIS_URL  # read by Stack.start_workers at call time



class _ChildAwareMeter(harness.CpuMeter):
    """harness.CpuMeter that also counts this process's finished children (the memory section's
    fresh processes) as ours: a child that has exited is gone from /proc, and its CPU time would
    otherwise be charged to "other programs"."""

    def _read(self) -> tuple[int, int]:
        busy, ours = super()._read()
        times = os.times()
        return busy, ours + round((times.children_user + times.children_system) * os.sysconf("SC_CLK_TCK"))


harness.CpuMeter = _ChildAwareMeter  # used by harness.wait_for_quiet / measure_quietly in this process

OBJECT_ID = 10_000  # the server's first interactive object id (sessions/live.py INTERACTIVE_ID_BASE)
KEEP_HISTORY = 32  # sessions/live.py KEEP_HISTORY_FRAMES
WARMUP_FRAMES = 3
MEMORY_MODES = ("server", "eager", "transformers")
MODE_TEXT = {
    "server": "server: lazy VideoFrames, keep_history=32",
    "eager": "all frames decoded up front, keep_history=None",
    "transformers": "as eager + all frames preprocessed up front (init_video_session)",
}


def ms(seconds: float) -> float:
    return seconds * 1000


# --------------------------------------------------------------------------- videos


def write_video(path: Path, frames: int, width: int, height: int, fps: int = 10, seed: int = 0) -> list[list[float]]:
    """An MP4 (mpeg4, yuv420p) of a bright square moving over a darker textured background.

    Returns the square's centre on every frame (the click goes on frame 0's)."""
    import av

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    background = (40 + 30 * xx / max(width - 1, 1) + 20 * yy / max(height - 1, 1)).astype(np.float32)
    background = np.stack([background, background * 0.9, background * 1.1], axis=-1)
    background += rng.normal(0, 6, background.shape)
    background = np.clip(background, 0, 255).astype(np.uint8)
    side = max(8, min(width, height) // 5)
    x, y, vx, vy = width * 0.2, height * 0.3, max(1.0, width / 40), max(1.0, height / 55)
    centres: list[list[float]] = []
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = 2_000_000
        for _ in range(frames):
            image = background.copy()
            x0, y0 = round(x), round(y)
            image[y0 : y0 + side, x0 : x0 + side] = (235, 220, 60)
            centres.append([x0 + side / 2, y0 + side / 2])
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
            x, y = x + vx, y + vy
            if not 0 <= x <= width - side:
                vx, x = -vx, min(max(x, 0), width - side)
            if not 0 <= y <= height - side:
                vy, y = -vy, min(max(y, 0), height - side)
        for packet in stream.encode():
            container.mux(packet)
    return centres


def decode_all(path: Path) -> list[np.ndarray]:
    """Every frame as uint8 RGB, up front (what transformers' ``load_video`` hands a session)."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# --------------------------------------------------------------------------- memory helpers


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def malloc_trim() -> None:
    """Hand freed heap pages back to the OS, so RSS shows what is still held."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def held_bytes(*roots: Any, limit: int = 2_000_000) -> int:
    """Bytes of the tensors / arrays reachable from ``roots`` (each storage once), model excluded."""
    import torch

    from inference.runtime.loader import LoadedSam3

    skip_types: tuple[type, ...] = (torch.nn.Module, LoadedSam3, type, type(sys))
    try:
        from transformers.image_processing_base import ImageProcessingMixin
        from transformers.processing_utils import ProcessorMixin

        skip_types += (ProcessorMixin, ImageProcessingMixin)
    except ImportError:
        pass
    seen: set[int] = set()
    storages: set[int] = set()
    total, stack, visited = 0, list(roots), 0
    while stack and visited < limit:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip_types):
            continue
        seen.add(id(obj))
        visited += 1
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if storage.data_ptr() not in storages:
                storages.add(storage.data_ptr())
                total += storage.nbytes()
        elif isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) not in storages:
                storages.add(id(base))
                total += base.nbytes
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)) or type(obj).__name__ == "deque":
            stack.extend(obj)
        elif hasattr(obj, "__dict__") and not isinstance(obj, (str, bytes, int, float)):
            stack.extend(vars(obj).values())
    return total


# --------------------------------------------------------------------------- in-process baseline


class InProcess:
    """SAM3's own video iterator on the same video and click, as the worker calls it."""

    def __init__(self, checkpoint: Path, resolution: int | None) -> None:
        import torch

        from inference.runtime.loader import load_sam3

        self.loaded = load_sam3(checkpoint, None, os.environ.get("IMAGE_MODEL_DEVICE", "cpu"), resolution=resolution)
        self.sync = torch.cuda.synchronize if self.loaded.device.type == "cuda" else (lambda: None)

    def run(self, video: Path, point: list[float], max_frames: int | None = None) -> dict[str, Any]:
        from inference.masks import encode_rle
        from inference.runtime.video import InteractiveVideoSession
        from inference.video_sessions.frames import VideoFrames

        started = time.perf_counter()
        frames = VideoFrames(video)
        session = InteractiveVideoSession(self.loaded, frames, keep_history=KEEP_HISTORY)
        opened = time.perf_counter()
        instances = session.add_prompt(0, OBJECT_ID, points=[point])
        encode_rle(instances.masks)
        self.sync()
        prompted = time.perf_counter()
        arrivals: list[float] = []
        masks: dict[int, list[Any]] = {}
        for frame, found in session.propagate(start_frame=0, max_frames=max_frames):
            masks[frame] = encode_rle(found.masks)
            self.sync()
            arrivals.append(time.perf_counter() - prompted)
        frames.close()
        return {
            "open_s": opened - started,
            "prompt_s": prompted - opened,
            "arrivals_s": arrivals,
            "frames": len(arrivals),
            "masks": {str(k): [m["counts"] for m in v] for k, v in masks.items()},
        }

    def close(self) -> None:
        del self.loaded
        gc.collect()


# --------------------------------------------------------------------------- the server side


class VideoStack(Stack):
    """harness.Stack on this benchmark's own Postgres database and Redis database."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.env["DATABASE_URL"] = harness.DATABASE_URL
        self.env["REDIS_URL"] = VIDEO_REDIS_URL
        self.env["SESSION_TIMEOUT_SECONDS"] = "3600"

    def start(self) -> VideoStack:  # Stack.start with this benchmark's database
        import redis

        harness.ensure_database(VIDEO_DATABASE)
        redis.Redis.from_url(VIDEO_REDIS_URL).flushdb()
        self._manage("migrate", "--no-input", "-v", "0")
        self.key = self._manage("create_api_key", "--user", "bench", "--name", "bench").strip().splitlines()[-1]
        port = harness.free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**self.env, "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port), "METRICS_PORT": str(harness.free_port())}
        self.server = self._spawn(["serve", "--no-migrate"], env, "server.log")
        self._wait(lambda: self._get_ok("/healthz"), self.server, "server.log", "the web server to answer /healthz")
        return self

    def upload_video(self, path: Path) -> str:
        import requests

        with path.open("rb") as data:
            response = requests.post(
                f"{self.url}/api/v1/uploads/", headers=self.headers, files={"file": (path.name, data, "video/mp4")},
                timeout=120,
            )
        response.raise_for_status()
        return response.json()["id"]

    def workers_rss(self) -> int:
        """RSS of the model worker processes (the run_workers supervisor's group), in bytes."""
        if self.workers is None:
            return 0
        pids = getattr(self, "_worker_pids", None)
        if not pids or pids[0] != self.workers.pid:
            pids = [self.workers.pid]
            for entry in os.listdir("/proc"):  # scanned once per worker start, not per reading
                try:
                    if entry.isdigit() and int(entry) != self.workers.pid and os.getpgid(int(entry)) == self.workers.pid:
                        pids.append(int(entry))
                except OSError:
                    continue
            self._worker_pids = pids
        total = 0
        for pid in pids:
            try:
                total += rss_bytes(pid)
            except OSError:  # a process of the group ended: rescan next time
                self._worker_pids = []
        return total


def server_run(
    stack: VideoStack, session_id: str, point: list[float], message_timeout: float, ack: bool = True
) -> dict[str, Any]:
    """Prompt and propagate over the session's websocket; every message's arrival time is kept.

    With ``ack`` the client acknowledges each frame as it handles it, as docs/video-sessions.md
    asks (without acks, frames after the 64th come as notices without masks)."""
    from websockets.sync.client import connect

    url = stack.url.replace("http", "ws", 1) + f"/ws/sessions/{session_id}/"
    arrivals: list[float] = []
    frame_indices: list[int] = []
    masks: dict[str, list[str]] = {}
    others: list[dict[str, Any]] = []
    record: dict[str, Any] = {"acks": ack}
    omitted = 0
    rss_peak = stack.workers_rss()
    with connect(url, additional_headers=stack.headers, origin=stack.url, max_size=None, open_timeout=30) as socket:
        first = json.loads(socket.recv(timeout=message_timeout))
        if first.get("type") != "status":
            raise RuntimeError(f"expected the status message on connect, got {first}")
        started = time.perf_counter()
        socket.send(json.dumps({"type": "prompt", "frame": 0, "points": [point]}))
        while True:
            message = json.loads(socket.recv(timeout=message_timeout))
            if message["type"] == "prompt_result":
                break
            if message["type"] == "error":
                raise RuntimeError(f"prompt failed: {message}")
        prompted = time.perf_counter()
        record["prompt_s"] = prompted - started
        record["prompt_objects"] = len(message.get("objects", []))
        propagate = {"type": "propagate", "direction": "forward", "start_frame": 0}
        sent = time.perf_counter()
        socket.send(json.dumps(propagate))
        while True:
            message = json.loads(socket.recv(timeout=message_timeout))
            now = time.perf_counter() - sent
            kind = message["type"]
            if kind == "frame":
                arrivals.append(now)
                frame_indices.append(int(message["frame"]))
                if message.get("masks_omitted"):
                    omitted += 1
                else:
                    masks[str(message["frame"])] = [o["mask"]["counts"] for o in message["objects"]]
                if ack:
                    socket.send('{"type": "ack"}')
                if len(arrivals) % 5 == 0:
                    rss_peak = max(rss_peak, stack.workers_rss())
            elif kind in ("done", "cancelled"):
                record["done_s"] = now
                record["frames_done"] = message.get("frames_done")
                record["end"] = kind
                break
            elif kind == "error":
                raise RuntimeError(f"propagation failed: {message}")
            else:
                if kind == "propagation":
                    record["propagation_ack_s"] = now
                others.append({"at_s": now, **{k: v for k, v in message.items() if k != "propagation"}})
    expected = list(range(frame_indices[0], frame_indices[0] + len(frame_indices))) if frame_indices else []
    record.update(
        arrivals_s=arrivals, frames=len(arrivals), frame_indices_in_order=frame_indices == expected,
        other_messages=others, masks=masks, worker_rss_peak=rss_peak, masks_omitted=omitted,
    )
    return record


def rest(stack: VideoStack, method: str, path: str, **kwargs: Any) -> Any:
    import requests

    response = requests.request(method, f"{stack.url}{path}", headers=stack.headers, timeout=600, **kwargs)
    if response.status_code >= 400:
        raise RuntimeError(f"{method} {path} answered {response.status_code}: {response.text[:500]}")
    return response.json() if response.content else None


def open_session(stack: VideoStack, upload_id: str) -> tuple[str, float]:
    started = time.perf_counter()
    body = rest(stack, "POST", "/api/v1/sessions/", json={"video": upload_id})
    return body["id"], time.perf_counter() - started


def summarize(arrivals: list[float], total: float) -> dict[str, float]:
    frames = len(arrivals)
    return {
        "frames": frames,
        "total_s": total,
        "fps": frames / total if total > 0 else float("nan"),
        "ms_per_frame": ms(total / frames) if frames else float("nan"),
        "first_frame_ms": ms(arrivals[0]) if arrivals else float("nan"),
        # first frame -> last frame: the steady rate, without the start-up of either path
        "steady_ms_per_frame": ms((arrivals[-1] - arrivals[0]) / (frames - 1)) if frames > 1 else float("nan"),
    }


def section_throughput(args: argparse.Namespace, checkpoint: Path, workdir: Path) -> dict[str, Any]:
    video = workdir / f"clip-{args.frames}.mp4"
    centres = write_video(video, args.frames, args.width, args.height)
    warm_video = workdir / "warmup.mp4"
    warm_centres = write_video(warm_video, WARMUP_FRAMES, args.width, args.height, seed=1)
    point = centres[0]

    stack = VideoStack(checkpoint, resolution=args.resolution)
    server_rows: list[dict[str, Any]] = []
    base_rows: list[dict[str, Any]] = []
    rss: dict[str, int] = {}
    attempts_all: list[tuple[float, int]] = []
    try:
        stack.start()
        stack.start_workers()
        upload_id = stack.upload_video(video)
        warm_upload = stack.upload_video(warm_video)
        baseline = InProcess(checkpoint, args.resolution)
        # Warm-up, not measured: one-time costs (allocator growth, lazy imports, connections) on both paths.
        session_id, _ = open_session(stack, warm_upload)
        server_run(stack, session_id, warm_centres[0], args.message_timeout, not args.no_ack)
        rest(stack, "DELETE", f"/api/v1/sessions/{session_id}/")
        baseline.run(warm_video, warm_centres[0])
        gc.collect()
        time.sleep(1.0)
        rss["worker_idle"] = stack.workers_rss()

        deadline = time.monotonic() + args.time_limit
        for repeat in range(args.repeats):
            if time.monotonic() > deadline:
                print(f"  time limit reached after {repeat} repeats", file=sys.stderr)
                break

            def prepare() -> tuple[str, float, int]:
                rss_before = stack.workers_rss()
                session_id, open_s = open_session(stack, upload_id)
                return session_id, open_s, rss_before

            def run(prepared: tuple[str, float, int], repeat: int = repeat) -> tuple[dict[str, Any], dict[str, Any]]:
                session_id, open_s, rss_before = prepared
                try:
                    # Server and in-process never overlap (the worker is idle while the baseline
                    # runs); the order flips each repeat so neither always goes first.
                    if repeat % 2 == 0:
                        s = server_run(stack, session_id, point, args.message_timeout, not args.no_ack)
                        b = baseline.run(video, point)
                    else:
                        b = baseline.run(video, point)
                        s = server_run(stack, session_id, point, args.message_timeout, not args.no_ack)
                    s["worker_rss_with_session"] = stack.workers_rss()
                finally:
                    rest(stack, "DELETE", f"/api/v1/sessions/{session_id}/")
                s["open_s"] = open_s
                s["worker_rss_before_open"] = rss_before
                time.sleep(1.0)
                s["worker_rss_after_close"] = stack.workers_rss()
                return s, b

            (s, b), other, attempts = harness.measure_quietly(
                stack, f"repeat {repeat + 1}", prepare, run, args.max_other_cores, args.retries
            )
            s["other_cores"], s["attempts"] = other, attempts
            attempts_all.append((other, attempts))
            server_rows.append(s)
            base_rows.append(b)
            ss, bs = summarize(s["arrivals_s"], s["done_s"]), summarize(b["arrivals_s"], b["arrivals_s"][-1])
            print(
                f"  repeat {repeat + 1}: websocket {ss['fps']:.2f} fps (first frame {ss['first_frame_ms']:.0f} ms), "
                f"in-process {bs['fps']:.2f} fps (first frame {bs['first_frame_ms']:.0f} ms); "
                f"others used {other:.2f} cores",
                flush=True,
            )
        baseline.close()
    finally:
        stack.close()

    if not server_rows:
        raise RuntimeError("no repeat completed")
    s_all = [summarize(s["arrivals_s"], s["done_s"]) for s in server_rows]
    b_all = [summarize(b["arrivals_s"], b["arrivals_s"][-1]) for b in base_rows]
    # Repeats that other programs disturbed beyond --max-other-cores (kept after the retries ran
    # out) are left out of the summary when at least one clean repeat exists.
    clean = [i for i, s in enumerate(server_rows) if s["other_cores"] <= args.max_other_cores] or list(
        range(len(server_rows))
    )
    s_sum, b_sum = [s_all[i] for i in clean], [b_all[i] for i in clean]

    def med(rows: list[dict[str, float]], key: str) -> float:
        return p50([r[key] for r in rows])

    def paired_ratio(key: str) -> str:  # median over repeats of server / in-process, same repeat
        return f"{p50([s[key] / b[key] for s, b in zip(s_sum, b_sum)]):.2f}x"

    def paired_diff(key: str) -> float:  # median over repeats of server - in-process, same repeat
        return p50([s[key] - b[key] for s, b in zip(s_sum, b_sum)])

    same = []
    for s, b in zip(server_rows, base_rows):
        frames = sorted(s["masks"], key=int)  # frames that came with masks (all of them with acks)
        same.append(sum(s["masks"][f] == b["masks"].get(f) for f in frames) / max(len(frames), 1))
    frames_ok = all(
        s["frames"] == s["frames_done"] == b["frames"] == args.frames and s["frame_indices_in_order"]
        for s, b in zip(server_rows, base_rows)
    )
    label = f"{args.model} model" + (f" at {args.resolution} px" if args.resolution else "")
    dropped = len(server_rows) - len(clean)
    print_table(
        f"(t1) propagation, {args.frames} frames {args.width}x{args.height}, one clicked object, {label}; "
        f"median of {len(clean)} repeats" + (f" ({dropped} disturbed by other programs left out)" if dropped else ""),
        ["path", "fps", "ms / frame", "steady ms / frame", "first frame ms"],
        [
            ["in-process: InteractiveVideoSession.propagate + encode_rle", med(b_sum, "fps"),
             med(b_sum, "ms_per_frame"), med(b_sum, "steady_ms_per_frame"), med(b_sum, "first_frame_ms")],
            ["server: websocket propagate -> done", med(s_sum, "fps"), med(s_sum, "ms_per_frame"),
             med(s_sum, "steady_ms_per_frame"), med(s_sum, "first_frame_ms")],
            ["server / in-process (paired, median)", paired_ratio("fps"), paired_ratio("ms_per_frame"),
             paired_ratio("steady_ms_per_frame"), paired_ratio("first_frame_ms")],
            ["server - in-process ms (paired, median)", "-", paired_diff("ms_per_frame"),
             paired_diff("steady_ms_per_frame"), paired_diff("first_frame_ms")],
        ],
    )
    mib = 1 / 2**20
    print_table(
        "(t2) around the propagation (median)",
        ["step", "in-process", "server"],
        [
            ["open the session ms (server: POST /sessions/)", ms(p50([b["open_s"] for b in base_rows])),
             ms(p50([s["open_s"] for s in server_rows]))],
            ["click prompt on frame 0 ms (server: ws prompt -> prompt_result)",
             ms(p50([b["prompt_s"] for b in base_rows])), ms(p50([s["prompt_s"] for s in server_rows]))],
            ["propagate sent -> `propagation` answer ms", "-",
             ms(p50([s.get("propagation_ack_s", float("nan")) for s in server_rows]))],
            ["frames with masks identical to in-process", "-", f"{100 * min(same):.0f} %"],
            ["frames that came without masks (no ack: beyond 64 unacknowledged)", "-",
             max(s["masks_omitted"] for s in server_rows)],
            ["worker RSS idle / before open MiB", "-",
             f"{rss['worker_idle'] * mib:.0f} / {p50([s['worker_rss_before_open'] for s in server_rows]) * mib:.0f}"],
            ["worker RSS peak during / after done / after close MiB", "-",
             (f"{p50([s['worker_rss_peak'] for s in server_rows]) * mib:.0f} / "
              f"{p50([s['worker_rss_with_session'] for s in server_rows]) * mib:.0f} / "
              f"{p50([s['worker_rss_after_close'] for s in server_rows]) * mib:.0f}")],
        ],
    )
    overhead, steady = paired_diff("ms_per_frame"), paired_diff("steady_ms_per_frame")
    per_repeat = ", ".join(f"{s['ms_per_frame'] - b['ms_per_frame']:.1f}" for s, b in zip(s_sum, b_sum))
    print(
        f"server overhead per frame: {overhead:.1f} ms over the whole propagation (per repeat: {per_repeat}), "
        f"{steady:.1f} ms in the steady state; frame counts and order {'ok' if frames_ok else 'NOT ok'}; "
        f"other programs used at most {max(server_rows[i]['other_cores'] for i in clean):.2f} cores",
        flush=True,
    )
    for s in server_rows:  # masks are only needed for the comparison above; keep the JSON small
        s.pop("masks")
    for b in base_rows:
        b.pop("masks")
    return {
        "video": {"frames": args.frames, "width": args.width, "height": args.height, "click": point},
        "server": server_rows, "in_process": base_rows, "server_summary": s_all, "in_process_summary": b_all,
        "summary_repeats": clean,
        "masks_identical_fraction": same, "frames_ok": frames_ok, "worker_rss_idle": rss.get("worker_idle"),
        "overhead_ms_per_frame": overhead, "steady_overhead_ms_per_frame": steady,
    }


# --------------------------------------------------------------------------- memory


def memory_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One session in a fresh process: RSS growth from opening it through propagating all of it."""
    import torch

    from inference.masks import encode_rle
    from inference.runtime.loader import load_sam3
    from inference.runtime.video import InteractiveVideoSession
    from inference.video_sessions.frames import VideoFrames

    loaded = load_sam3(Path(spec["checkpoint"]), None, os.environ.get("IMAGE_MODEL_DEVICE", "cpu"),
                       resolution=spec["resolution"])
    mode = spec["mode"]

    def open_session(path: Path) -> tuple[InteractiveVideoSession, Any]:
        if mode == "server":
            frames: Any = VideoFrames(path)
            return InteractiveVideoSession(loaded, frames, keep_history=KEEP_HISTORY), frames
        frames = decode_all(path)
        session = InteractiveVideoSession(loaded, frames, keep_history=None)
        if mode == "transformers":
            # What init_video_session(video=...) stores: every frame preprocessed at the model size.
            processed = loaded.video_processor.video_processor(videos=[np.stack(frames)], return_tensors="pt")
            pixels = processed["pixel_values_videos"][0].to(dtype=loaded.dtype)
            for index in range(pixels.shape[0]):
                session._frames[index] = pixels[index]  # LazyFrames.__setitem__: held, used instead of decoding
        return session, frames

    def propagate(session: InteractiveVideoSession, point: list[float], sample: list[int] | None) -> int:
        encode_rle(session.add_prompt(0, OBJECT_ID, points=[point]).masks)
        count = 0
        for _frame, found in session.propagate(start_frame=0):
            encode_rle(found.masks)
            count += 1
            if sample is not None:
                sample.append(rss_bytes())
        return count

    # Warm-up on a short video in the same mode: one-time allocations are not the session's.
    warm, _frames = open_session(Path(spec["warm_video"]))
    propagate(warm, spec["warm_point"], None)
    del warm, _frames
    gc.collect()
    malloc_trim()
    before = rss_bytes()
    started = time.perf_counter()
    session, frames = open_session(Path(spec["video"]))
    after_open = rss_bytes()
    samples = [after_open]
    count = propagate(session, spec["point"], samples)
    elapsed = time.perf_counter() - started
    gc.collect()
    malloc_trim()
    retained = rss_bytes()
    held = held_bytes(session.session, session._frames, frames)
    return {
        "mode": mode, "frames": count, "rss_before": before, "rss_after_open": after_open,
        "rss_peak": max(samples), "rss_retained": retained, "held_tensor_bytes": held,
        "seconds": elapsed, "torch_threads": torch.get_num_threads(),
    }


def section_memory(args: argparse.Namespace, checkpoint: Path, workdir: Path) -> dict[str, Any]:
    lengths = [int(v) for v in args.memory_frames.split(",") if v]
    modes = [m for m in args.memory_modes.split(",") if m]
    warm_video = workdir / "mem-warmup.mp4"
    warm_point = write_video(warm_video, WARMUP_FRAMES, args.width, args.height, seed=1)[0]
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + args.time_limit
    for length in lengths:
        video = workdir / f"mem-{length}.mp4"
        point = write_video(video, length, args.width, args.height)[0]
        for mode in modes:
            if time.monotonic() > deadline:
                print(f"  time limit reached; skipping {mode} at {length} frames", file=sys.stderr)
                continue
            spec = {"mode": mode, "video": str(video), "point": point, "warm_video": str(warm_video),
                    "warm_point": warm_point, "checkpoint": str(checkpoint), "resolution": args.resolution}

            def run(spec: dict[str, Any] = spec, length: int = length) -> dict[str, Any]:
                done = subprocess.run(
                    [sys.executable, __file__, "--memory-child", json.dumps(spec)], capture_output=True, text=True,
                    timeout=max(300, 60 + length * 10), cwd=harness.ROOT, check=False,
                )
                if done.returncode:
                    raise RuntimeError(f"memory child failed:\n{done.stderr[-3000:]}")
                return json.loads(done.stdout.strip().splitlines()[-1])

            result, other, attempts = harness.measure_quietly(
                None, f"memory {mode} {length}", lambda: None, lambda _p, run=run: run(), args.max_other_cores,
                args.retries,
            )
            result.update(other_cores=other, attempts=attempts)
            rows.append(result)
            growth = (result["rss_retained"] - result["rss_before"]) / 2**20
            print(f"  {mode:12s} {length:4d} frames: retained +{growth:.1f} MiB, "
                  f"peak +{(result['rss_peak'] - result['rss_before']) / 2**20:.1f} MiB, "
                  f"{result['frames'] / result['seconds']:.1f} fps", flush=True)

    mib = 1 / 2**20
    table = []
    fits: dict[str, dict[str, float]] = {}
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        for r in mine:
            retained = (r["rss_retained"] - r["rss_before"]) * mib
            table.append([
                MODE_TEXT[mode], r["frames"], retained, (r["rss_peak"] - r["rss_before"]) * mib,
                retained / r["frames"], r["held_tensor_bytes"] * mib, r["held_tensor_bytes"] * mib / r["frames"],
            ])
        if len(mine) >= 2:
            x = np.array([r["frames"] for r in mine], dtype=float)
            for key, values in (
                ("retained", [(r["rss_retained"] - r["rss_before"]) * mib for r in mine]),
                ("held", [r["held_tensor_bytes"] * mib for r in mine]),
            ):
                slope, intercept = np.polyfit(x, np.array(values), 1)
                fits.setdefault(mode, {})[f"{key}_mib_per_frame"] = float(slope)
                fits[mode][f"{key}_mib_fixed"] = float(intercept)
    label = f"{args.model} model" + (f" at {args.resolution} px" if args.resolution else "")
    print_table(
        f"(m1) memory of one session (one clicked object, {args.width}x{args.height} video, {label}), "
        "each in a fresh process",
        ["frames held as", "frames", "RSS retained MiB", "RSS peak MiB", "retained MiB / frame",
         "tensors held MiB", "tensors MiB / frame"],
        table,
    )
    if fits:
        print_table(
            "(m2) linear fit over the lengths: fixed MiB per session + MiB per frame",
            ["frames held as", "RSS fixed", "RSS per frame", "tensors fixed", "tensors per frame"],
            [[MODE_TEXT[m], f["retained_mib_fixed"], f"{f['retained_mib_per_frame']:.3f}", f["held_mib_fixed"],
              f"{f['held_mib_per_frame']:.3f}"] for m, f in fits.items()],
        )
    return {"rows": rows, "fits": fits, "lengths": lengths, "modes": modes}


# --------------------------------------------------------------------------- main


def private_checkpoint(model: str, workdir: Path) -> Path:
    """This run's own copy of the checkpoint under ``workdir`` (removed at the end), so another
    benchmark cleaning up the shared cache under /tmp cannot pull it away mid-run: the tiny model
    is written afresh (seconds); the full one is hard-linked from bench/checkpoints.py's cache
    (written there first if missing), which costs no disk space."""
    directory = workdir / f"checkpoint-{model}"
    if model == "tiny":
        from inference.runtime.tiny import write_tiny_checkpoint

        return write_tiny_checkpoint(directory)
    shared = ensure_checkpoint(model)
    directory.mkdir()
    for path in shared.iterdir():
        try:
            os.link(path, directory / path.name)
        except OSError:  # another filesystem: use the shared directory itself
            return shared
    return directory


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-child":
        print(json.dumps(memory_child(json.loads(sys.argv[2]))), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--resolution", type=int, help="model input size (default: the tiny model's own; 224 for full)")
    parser.add_argument("--frames", type=int, default=None, help="video length for (t) (default 80 tiny, 16 full)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--repeats", type=int, default=None, help="(t) repeats (default 5 tiny, 2 full)")
    parser.add_argument("--memory-frames", default=None, help="(m) video lengths (default 25,50,100,200 tiny; 6,12,24 full)")
    parser.add_argument("--memory-modes", default=",".join(MEMORY_MODES), help=f"(m) any of {','.join(MEMORY_MODES)}")
    parser.add_argument("--sections", default="tm", help="t: throughput/latency through the server, m: memory")
    parser.add_argument("--no-ack", action="store_true", help="(t) do not acknowledge frames (see docs/video-sessions.md)")
    parser.add_argument("--message-timeout", type=float, default=300.0, help="max seconds between websocket messages")
    parser.add_argument("--time-limit", type=float, default=900.0, help="per section: no new measurement after this")
    parser.add_argument("--max-other-cores", type=float, default=0.2)
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    if args.resolution is None and args.model == "full":
        args.resolution = 224
    args.frames = args.frames or (80 if args.model == "tiny" else 16)
    args.repeats = args.repeats or (5 if args.model == "tiny" else 2)
    args.memory_frames = args.memory_frames or ("25,50,100,200" if args.model == "tiny" else "6,12,24")

    import tempfile

    report: dict[str, Any] = {"machine": harness.machine_info(), "args": {k: str(v) for k, v in vars(args).items()}}
    report["machine"]["device"] = os.environ.get("IMAGE_MODEL_DEVICE", "cpu")
    with tempfile.TemporaryDirectory(prefix="sam3-bench-video-") as tmp:
        workdir = Path(tmp)
        checkpoint = private_checkpoint(args.model, workdir)
        print(f"{args.model} model ({checkpoint}), resolution {args.resolution or 'checkpoint default'}, "
              f"{report['machine']['cpu_cores']} cores, torch {report['machine']['torch']}", flush=True)
        for letter, name, section in (("t", "throughput", section_throughput), ("m", "memory", section_memory)):
            if letter in args.sections:
                report[name] = section(args, checkpoint, workdir)
                report["machine"]["load_average_end"] = os.getloadavg()
                if args.json:  # after each section: an interrupted run keeps what it measured
                    args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.json:
        print(f"raw figures: {args.json}")


if __name__ == "__main__":
    main()
