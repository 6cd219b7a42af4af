"""Model workers announce themselves in Redis; web processes read who is alive and ready.

Each worker rewrites its entry every HEARTBEAT_SECONDS. An entry older than
WORKER_HEARTBEAT_TIMEOUT_SECONDS is a dead worker (killed, hung, or its host gone); a worker that
``run_workers`` sees exit is withdrawn at once, so its sessions are claimed without waiting for that.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from sam3site.redis_clients import WORKERS_KEY

__all__ = [
    "WORKERS_KEY", "WorkerInfo", "parse_workers", "pick_worker", "publish", "read_workers", "serves_video", "withdraw", "worker_name",
]
HEARTBEAT_SECONDS = 1.0


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    queue: str
    device: str
    state: str  # loading | ready | failed | disabled
    reason: str | None
    model: dict[str, Any]
    pending: int
    beat_at: float
    started_at: float
    cache: dict[str, int]
    sessions: int = 0  # live video sessions held in memory

    @property
    def age(self) -> float:
        return time.time() - self.beat_at

    @property
    def alive(self) -> bool:
        return self.age < settings.CONFIG.worker_heartbeat_timeout_seconds

    @property
    def ready(self) -> bool:
        return self.alive and self.state == "ready"


def worker_name(queue: str | None, pid: int) -> str:
    """How a model worker is named: its queue, host and process id."""
    return f"{queue or 'embedded'}@{socket.gethostname()}:{pid}"


def publish(client: redis.Redis, info: WorkerInfo) -> None:
    client.hset(WORKERS_KEY, info.name, json.dumps(info.__dict__))


def withdraw(client: redis.Redis, name: str) -> None:
    client.hdel(WORKERS_KEY, name)


def parse_workers(raw: Mapping[bytes | str, bytes | str]) -> list[WorkerInfo]:
    return sorted((WorkerInfo(**json.loads(value)) for value in raw.values()), key=lambda w: w.name)


def read_workers(client: redis.Redis) -> list[WorkerInfo]:
    return parse_workers(client.hgetall(WORKERS_KEY))


def serves_video(device: str) -> bool:
    """Whether a worker on ``device`` takes video sessions (VIDEO_MODEL_ENABLED, VIDEO_GPU_LIST)."""
    config = settings.CONFIG
    if not config.video_model_enabled:
        return False
    return device == "cpu" or int(device.partition(":")[2] or 0) in config.video_gpu_list


def pick_worker(affinity_key: str, workers: list[WorkerInfo]) -> WorkerInfo:
    """Rendezvous hashing: the same image goes to the same worker (its features are cached there);
    when a worker joins or leaves, only the images that hashed to it move."""
    return max(workers, key=lambda w: hashlib.blake2b(f"{w.name}|{affinity_key}".encode(), digest_size=8).digest())
