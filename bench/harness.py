"""Start and stop the real server stack for benchmarks, plus image and statistics helpers.

The stack is what production runs: Postgres (database ``sam3_bench``), Redis (database 13),
``manage.py serve`` (daphne) and ``manage.py run_workers`` (Celery model workers), each a real
process group on free local ports. Everything started here is stopped by :meth:`Stack.close`,
which also runs at interpreter exit and on SIGTERM/SIGINT, so an interrupted benchmark leaves no
processes behind. Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # scripts run as `python bench/x.py` import the project's packages
    sys.path.insert(0, str(ROOT))

PYTHON = sys.executable
PG_DSN_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
BENCH_DATABASE = "sam3_bench"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{BENCH_DATABASE}"
# Database 13 is the benchmarks' own: the test suite uses 15, so flushing 13 touches nobody else.
REDIS_URL = "redis://127.0.0.1:6379/13"
WORKERS_KEY = "sam3:workers"  # inference/registry.py
START_TIMEOUT_SECONDS = 300  # the full-size model loads and warms up in ~15 s here; generous for slow disks
STOP_TIMEOUT_SECONDS = 40  # run_workers gives its Celery children 30 s for a warm shutdown


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default); NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def p50(values: Sequence[float]) -> float:
    return percentile(values, 50)


def p95(values: Sequence[float]) -> float:
    return percentile(values, 95)


def print_table(title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain fixed-width table (also valid Markdown, so it pastes into docs/benchmarks.md)."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    print(f"\n### {title}\n")
    for index, row in enumerate(cells):
        # Labels (first column, header) left, figures right.
        aligned = (c.ljust(w) if index == 0 or i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        print("| " + " | ".join(aligned) + " |")
        if index == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    sys.stdout.flush()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu_cores": os.cpu_count(),
        "cuda_available": torch.cuda.is_available(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        # Other jobs on a 2-core machine skew every figure: record how busy it was.
        "load_average": os.getloadavg(),
    }


class CpuMeter:
    """CPU used by other programs while a measurement runs.

    This machine is shared (other sessions run tests on the same 2 cores), so every figure comes
    with how many cores the rest of the machine kept busy meanwhile: all busy time in /proc/stat
    minus the time of our own process groups (this script, the server, the workers).
    """

    def __init__(self, stack: Stack | None = None) -> None:
        self.stack = stack
        self._start = self._read()
        self._started = time.monotonic()

    def _groups(self) -> set[int]:
        groups = {os.getpgid(0)}
        if self.stack is not None:
            groups |= {p.pid for p in (self.stack.server, self.stack.workers) if p is not None}
        return groups

    def _read(self) -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
        ours, groups = 0, self._groups()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    parts = stat.read().rsplit(")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            if int(parts[2]) in groups:  # parts[2] is the process group id
                ours += int(parts[11]) + int(parts[12])  # utime + stime
        return busy, ours

    def other_cores(self) -> float:
        """Average cores used by others since construction (0 = the machine was ours)."""
        busy, ours = self._read()
        elapsed = time.monotonic() - self._started
        ticks = os.sysconf("SC_CLK_TCK")
        other = (busy - self._start[0]) - (ours - self._start[1])
        return max(0.0, other / ticks / elapsed) if elapsed > 0 else 0.0


def wait_for_quiet(stack: Stack | None, max_other: float, window: float = 3.0, timeout: float = 120.0) -> float:
    """Wait (at most ``timeout`` s) until other programs use at most ``max_other`` cores over ``window`` s."""
    deadline = time.monotonic() + timeout
    while True:
        meter = CpuMeter(stack)
        time.sleep(window)
        other = meter.other_cores()
        if other <= max_other or time.monotonic() > deadline:
            return other


def measure_quietly(
    stack: Stack | None,
    label: str,
    prepare: Callable[[], Any],
    run: Callable[[Any], Any],
    max_other: float,
    retries: int,
) -> tuple[Any, float, int]:
    """``run(prepare())`` on a quiet machine: (result, cores others used meanwhile, attempts).

    On 2 shared cores a neighbour's burst does not cost its share but several times that (torch's
    two OpenMP threads wait on each other whenever one is descheduled), so a measurement taken
    while others were busy is retried (up to ``retries`` times) after waiting for quiet.
    """
    for attempt in range(1, retries + 2):
        prepared = prepare()  # uploads etc. happen before the quiet check, not inside the measurement
        wait_for_quiet(stack, max_other)
        meter = CpuMeter(stack)
        result = run(prepared)
        other = meter.other_cores()
        if other <= max_other or attempt > retries:
            if other > max_other:
                print(f"  {label}: other programs still used {other:.2f} cores; kept anyway", file=sys.stderr)
            return result, other, attempt
        print(f"  {label}: other programs used {other:.2f} cores meanwhile; measuring again", file=sys.stderr)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------- images


def random_image(width: int, height: int, seed: int) -> np.ndarray:
    """A distinct RGB uint8 image per seed (distinct bytes, so distinct hashes on the server)."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    # Fast compression: these are noise images, deflate gains nothing and would slow set-up.
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ensure_database(name: str = BENCH_DATABASE) -> None:
    import psycopg

    with psycopg.connect(PG_DSN_ADMIN, autocommit=True) as connection:  # CREATE DATABASE refuses transactions
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')


def _stop_group(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM the process group (the supervisor and its children), SIGKILL what outlives ``timeout``."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass
    # Children may outlive a supervisor that exited first (the group id still names them): give
    # them a moment to finish their own shutdown, then kill what is left.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _group_alive(process.pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class Stack:
    """One web server and one set of model workers on the bench database and Redis database."""

    checkpoint: Path
    resolution: int | None = None
    request_timeout: float = 600.0
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sam3-bench-")))
    env: dict[str, str] = field(init=False)
    url: str = field(init=False, default="")
    key: str = field(init=False, default="")
    server: subprocess.Popen | None = field(init=False, default=None)
    workers: subprocess.Popen | None = field(init=False, default=None)
    worker_env: dict[str, str] = field(init=False, default_factory=dict)
    _closed: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": DATABASE_URL,
            "REDIS_URL": REDIS_URL,
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(48),
            "DATA_DIR": str(self.workdir / "var"),
            "UPLOAD_DIR": str(self.workdir / "uploads"),
            "OUTPUT_DIR": str(self.workdir / "outputs"),
            "RATE_LIMIT_ENABLED": "false",  # the benchmark is one client sending many requests
            "API_KEYS": "[]",  # database keys only (the source document's example keys are refused here)
            "MAX_UPLOAD_SIZE_MB": "100",
            "INFERENCE_QUEUE_LIMIT": "64",  # above the highest concurrency: nothing is refused
            # A request may wait behind 8 others on a slow CPU model; the deadline must not cut it.
            "INFERENCE_TIMEOUT_SECONDS": str(int(self.request_timeout)),
            "ENABLE_METRICS": "true",  # production default: its cost is part of the overhead
            "LOG_LEVEL": "INFO",
            "SAM3_CHECKPOINT": str(self.checkpoint),
            "SAM3_BPE_PATH": "/nonexistent",  # use the checkpoint directory's tokenizer
            "IMAGE_MODEL_DEVICE": os.environ.get("IMAGE_MODEL_DEVICE", "cpu"),
        }
        if self.resolution is not None:
            self.env["IMAGE_MODEL_RESOLUTION"] = str(self.resolution)
        atexit.register(self.close)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, _exit_on_signal)

    # --- lifecycle ---

    def start(self) -> Self:
        import redis

        ensure_database()
        redis.Redis.from_url(REDIS_URL).flushdb()  # stale worker entries, queues and in-flight sets
        self._manage("migrate", "--no-input", "-v", "0")
        self.key = self._manage("create_api_key", "--user", "bench", "--name", "bench").strip().splitlines()[-1]
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**self.env, "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port), "METRICS_PORT": str(free_port())}
        self.server = self._spawn(["serve", "--no-migrate"], env, "server.log")
        self._wait(lambda: self._get_ok("/healthz"), self.server, "server.log", "the web server to answer /healthz")
        return self

    def start_workers(self, **overrides: str) -> None:
        """(Re)start the model workers with ``overrides`` (e.g. INFERENCE_MAX_BATCH_SIZE) and wait until ready."""
        import redis

        self.stop_workers()
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(WORKERS_KEY)
        self.worker_env = {"WORKER_METRICS_PORT": str(free_port()), **overrides}
        log = f"workers-{int(time.time())}.log"
        command = ["run_workers", "--devices", self.env["IMAGE_MODEL_DEVICE"]]
        self.workers = self._spawn(command, {**self.env, **self.worker_env}, log)

        def ready() -> bool:
            entries = [json.loads(v) for v in client.hgetall(WORKERS_KEY).values()]
            failed = [e for e in entries if e["state"] == "failed"]
            if failed:
                raise RuntimeError(f"model worker failed to load: {failed[0]['reason']}")
            return any(e["state"] == "ready" and time.time() - e["beat_at"] < 5 for e in entries)

        self._wait(ready, self.workers, log, "a model worker to be ready")

    def stop_workers(self) -> None:
        if self.workers is not None:
            _stop_group(self.workers)
            self.workers = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.stop_workers()
        if self.server is not None:
            _stop_group(self.server)
            self.server = None
        if os.environ.get("BENCH_KEEP_LOGS"):
            print(f"logs kept in {self.workdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # --- requests ---

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}

    def upload(self, session: Any, data: bytes, name: str = "image.png") -> str:
        response = session.post(
            f"{self.url}/api/v1/uploads/", headers=self.headers, files={"file": (name, data, "image/png")}, timeout=60
        )
        response.raise_for_status()
        return response.json()["id"]

    def upload_many(self, images: Sequence[bytes], threads: int = 4) -> list[str]:
        import requests

        def one(data: bytes) -> str:
            with requests.Session() as session:
                return self.upload(session, data)

        with ThreadPoolExecutor(threads) as pool:
            return list(pool.map(one, images))

    def segment(
        self, session: Any, upload_id: str, text: str = "dog", threshold: float = 0.0
    ) -> tuple[int, float, dict[str, Any] | None, int]:
        """One segmentation request by upload id: (status, client wall seconds, body if 200, response bytes)."""
        payload = {"image": upload_id, "prompts": [{"text": text}], "threshold": threshold}
        started = time.perf_counter()
        response = session.post(
            f"{self.url}/api/v1/segment/", headers=self.headers, json=payload, timeout=self.request_timeout
        )
        body = response.content  # read fully before stopping the clock
        elapsed = time.perf_counter() - started
        return response.status_code, elapsed, json.loads(body) if response.status_code == 200 else None, len(body)

    # --- internals ---

    def _manage(self, *args: str) -> str:
        done = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=300,
            check=False,  # the error is raised below with the command's stderr
        )
        if done.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def _spawn(self, args: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / log_name).open("w") as log:
            return subprocess.Popen(
                [PYTHON, "manage.py", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: one killpg stops it and its children
            )

    def _get_ok(self, path: str) -> bool:
        import requests

        try:
            return requests.get(f"{self.url}{path}", timeout=2).ok
        except requests.RequestException:
            return False

    def _wait(self, condition: Callable[[], bool], process: subprocess.Popen, log_name: str, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"process exited while waiting for {what}:\n{self.log_tail(log_name)}")
            try:
                if condition():
                    return
            except RuntimeError as error:
                raise RuntimeError(f"{error}\n{self.log_tail(log_name)}") from None
            time.sleep(0.3)
        raise RuntimeError(f"timed out waiting for {what}:\n{self.log_tail(log_name)}")

    def log_tail(self, log_name: str, chars: int = 4000) -> str:
        path = self.workdir / log_name
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def _exit_on_signal(signum: int, _frame: object) -> None:
    # Raising SystemExit unwinds through `finally` / context managers, then atexit runs close().
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------- request loops


@dataclass
class LoadResult:
    concurrency: int
    sent: int
    ok: int
    non_200: dict[int, int]
    wall_seconds: float
    latencies: list[float]  # client seconds of the 200 answers
    timed_out: bool  # the loop stopped issuing requests at its time limit

    @property
    def throughput(self) -> float:
        return self.ok / self.wall_seconds if self.wall_seconds > 0 else float("nan")


def run_load(stack: Stack, upload_ids: Sequence[str], concurrency: int, time_limit: float) -> LoadResult:
    """Send one request per upload id with ``concurrency`` clients; stop issuing after ``time_limit`` s."""
    import threading

    import requests

    ids = list(upload_ids)
    lock = threading.Lock()
    latencies: list[float] = []
    non_200: dict[int, int] = {}
    sent = 0
    started = time.perf_counter()
    deadline = time.monotonic() + time_limit

    def client() -> None:
        nonlocal sent
        with requests.Session() as session:
            while True:
                with lock:
                    if not ids or time.monotonic() > deadline:
                        return
                    upload_id = ids.pop(0)
                    sent += 1
                try:
                    status, elapsed, _body, _size = stack.segment(session, upload_id)
                except requests.RequestException:
                    status, elapsed = -1, 0.0  # connection error / client timeout
                with lock:
                    if status == 200:
                        latencies.append(elapsed)
                    else:
                        non_200[status] = non_200.get(status, 0) + 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return LoadResult(concurrency, sent, len(latencies), non_200, wall, latencies, bool(ids))
