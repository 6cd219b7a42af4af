"""Fixtures: API clients with real keys, media files, and real server processes.

Tests run against the machine's real Postgres (test database made by pytest-django) and Redis
(database 15 unless REDIS_URL says otherwise), every key of this run under its own prefix
(tests/isolation.py): rate counters are cleared before each test, everything the run wrote is
deleted at its end.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import requests
from django.conf import settings
from django.core.cache import cache
from PIL import Image
from rest_framework.test import APIClient

from accounts.services import api_key_create
from tests.processes import ROOT, LiveServer, free_port, serve, stop_process_group, wait_until_ready  # noqa: F401  (the suite's imports)


@pytest.fixture(scope="session", autouse=True)
def _redis_keys_of_this_run() -> Iterator[None]:
    yield
    client = cache._cache.get_client(write=True)
    for key in client.scan_iter(match=f"{settings.CONFIG.redis_key_prefix}:*"):
        client.delete(key)


@pytest.fixture(autouse=True)
def _fresh_redis_and_dirs() -> None:
    # Rate counters live in the cache; the model workers' registry and queues (module-scoped
    # fixtures) must survive from test to test, so only the rate counters go.
    client = cache._cache.get_client(write=True)
    for key in client.scan_iter(match=f"{settings.CONFIG.redis_key_prefix}:*:rl:*"):
        client.delete(key)
    for directory in (settings.UPLOAD_DIR, settings.OUTPUT_DIR):
        shutil.rmtree(directory, ignore_errors=True)
        Path(directory).mkdir(parents=True)
    Path(settings.FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)


@dataclass
class KeyedClient:
    user: object
    key: str
    client: APIClient


@pytest.fixture
def make_client(db: None) -> Callable[..., KeyedClient]:
    from django.contrib.auth import get_user_model

    def make(username: str = "alice", *, staff: bool = False, **key_options: object) -> KeyedClient:
        user, _ = get_user_model().objects.get_or_create(username=username, defaults={"is_staff": staff})
        _api_key, full_key = api_key_create(user=user, name="test", **key_options)
        client = APIClient()
        client.credentials(HTTP_X_API_KEY=full_key)
        return KeyedClient(user, full_key, client)

    return make


@pytest.fixture
def alice(make_client: Callable[..., KeyedClient]) -> KeyedClient:
    return make_client("alice")


@pytest.fixture
def bob(make_client: Callable[..., KeyedClient]) -> KeyedClient:
    return make_client("bob")


# --- media ---

def png_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def mp4_bytes(frames: int = 8, width: int = 64, height: int = 48, fps: int = 10) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            image = np.full((height, width, 3), (index * 30) % 255, dtype=np.uint8)
            image[: height // 2, : width // 2] = 255 - image[0, 0]
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def files_under(directory: Path | str) -> list[Path]:
    return sorted(path for path in Path(directory).rglob("*") if path.is_file())


# --- real server processes ---

def _test_database_url() -> str:
    from django.db import connection

    database = connection.settings_dict
    return f"postgres://{database['USER'] or 'postgres'}@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/{database['NAME']}"


@pytest.fixture
def start_server(transactional_db: None, tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start `manage.py serve` (the README's server command) as a real process on free ports."""
    started: list[LiveServer] = []

    def start(*, python: str = sys.executable, cwd: Path = ROOT, **env_overrides: str) -> LiveServer:
        port, metrics_port = free_port(), free_port()
        env = {
            **os.environ,
            "DATABASE_URL": _test_database_url(),
            "SERVER_HOST": "127.0.0.1",
            "SERVER_PORT": str(port),
            "METRICS_PORT": str(metrics_port),
            "OMP_NUM_THREADS": "1",  # as launch_workers: in-process inference in the embedded default
            **env_overrides,
        }
        log_path = tmp_path / f"server-{port}.log"
        process = subprocess.Popen(
            [python, "manage.py", "serve", "--no-migrate"],
            cwd=cwd, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        server = LiveServer(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", process, log_path)
        started.append(server)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{server.log()}")
            try:
                if requests.get(f"{server.url}/healthz", timeout=2).ok:
                    break
            except requests.RequestException:  # refused, or accepted by the socket before daphne is up
                time.sleep(0.2)
        else:
            raise RuntimeError(f"server did not start:\n{server.log()}")
        return server

    yield start
    for server in started:
        stop_process_group(server.process)


# --- Meta's own sam3 package (reference code, never imported by the server) ---

META_PACKAGE_DIR = Path(os.environ.get("SAM3_META_PACKAGE_DIR", ROOT / ".venv" / "meta-sam3"))


def require_meta_package() -> Path:
    """Where Meta's ``sam3==0.1.4`` is unpacked (.ci/run: ``pip install --no-deps --target .venv/meta-sam3
    sam3==0.1.4 timm einops ftfy iopath portalocker psutil``); CI fails rather than skips without it."""
    if not (META_PACKAGE_DIR / "sam3" / "model_builder.py").is_file():
        reason = f"Meta's sam3==0.1.4 is not unpacked at {META_PACKAGE_DIR} (SAM3_META_PACKAGE_DIR; .ci/run installs it)"
        if os.environ.get("CI"):  # an install step that broke must not turn these checks into skips
            pytest.fail(reason)
        pytest.skip(reason)
    return META_PACKAGE_DIR


# --- the tiny SAM3 and real model workers ---

@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inference.runtime.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-sam3"))


@dataclass
class Workers:
    process: subprocess.Popen
    metrics_url: str
    log_path: Path
    names: list[str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process_group(self.process)


def read_registry() -> list:
    import redis

    from inference import registry

    return [w for w in registry.read_workers(redis.Redis.from_url(settings.REDIS_URL)) if w.alive]


def launch_workers(
    log_dir: Path, checkpoint: Path, *, devices: tuple[str, ...] = ("cpu",), wait_for: str = "ready",
    python: str = sys.executable, cwd: Path = ROOT, prefix: tuple[str, ...] = (), alongside: bool = False, **env_overrides: str,
) -> Workers:
    """`manage.py run_workers` as a real process group: Celery workers that load the model
    (``python`` and ``cwd``: another environment and copy of the code, e.g. the runtime-only install;
    ``prefix``: a command to run it under, e.g. ``ip netns exec NAME``; ``alongside``: workers already
    running stay registered, and only the new ones are waited for)."""
    import redis

    from inference import registry

    earlier = {w.name for w in read_registry()} if alongside else set()
    if not alongside:
        redis.Redis.from_url(settings.REDIS_URL).delete(registry.WORKERS_KEY)
    metrics_port = free_port()
    env = {
        **os.environ, "DATABASE_URL": _test_database_url(), "SAM3_CHECKPOINT": str(checkpoint), "SAM3_BPE_PATH": "/nonexistent",
        "IMAGE_MODEL_DEVICE": "cpu",
        # One torch thread: the tiny model gains nothing from more, and on 2 cores shared with the
        # server and the tests a spinning thread pool slowed each frame ~10x (the README's advice).
        "OMP_NUM_THREADS": "1",
        "WORKER_METRICS_PORT": str(metrics_port), "WORKER_HEARTBEAT_TIMEOUT_SECONDS": "4", **env_overrides,
    }
    log_path = log_dir / f"workers-{metrics_port}.log"
    process = subprocess.Popen(
        [*prefix, python, "manage.py", "run_workers", "--devices", *devices],
        cwd=cwd, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    workers = Workers(process, f"http://127.0.0.1:{metrics_port}", log_path, [])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"run_workers exited early:\n{workers.log()}")
        alive = [w for w in read_registry() if w.name not in earlier]
        settled = [w for w in alive if (w.state == "ready" if wait_for == "ready" else w.state != "loading")]
        if len(settled) == len(devices):
            workers.names = [w.name for w in settled]
            return workers
        time.sleep(0.3)
    workers.stop()
    raise RuntimeError(f"model workers did not become {wait_for}:\n{workers.log()}")


@pytest.fixture(scope="module")
def model_worker(
    django_db_setup: None, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    """One CPU model worker with the tiny SAM3, shared by a test module."""
    workers = launch_workers(tmp_path_factory.mktemp("workers"), tiny_checkpoint)
    yield workers
    workers.stop()
