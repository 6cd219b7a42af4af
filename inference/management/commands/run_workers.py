"""Start the model workers: one Celery worker process per device, each with its own queue.

Each child is a fresh interpreter (never a fork of this one), so CUDA is initialised only inside
the worker that owns the device. This process supervises: restarts a worker that dies and serves
the workers' aggregated Prometheus metrics on WORKER_METRICS_PORT.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from argparse import ArgumentParser
from contextlib import suppress
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from loguru import logger

from inference import registry
from sam3site import redis_clients
from sam3site.management.commands.serve import serve_metrics
from sam3site.processes import EXIT_MODEL_REQUIRED, WORKER_DEVICE_ENV, WORKER_QUEUE_ENV

RESTART_BACKOFF_SECONDS = 2.0


def worker_devices(image_device: str, video_gpus: list[int]) -> list[str]:
    """CPU: one worker. CUDA: one per GPU named by IMAGE_MODEL_DEVICE or VIDEO_GPU_LIST."""
    if image_device == "cpu":
        return ["cpu"]
    image_index = int(image_device.partition(":")[2] or 0)
    return [f"cuda:{index}" for index in sorted({image_index, *video_gpus})]


def queue_name(device: str, ordinal: int) -> str:
    """Unique per run_workers process (its pid), so two of them sharing a Redis never share a queue;
    a worker restarted by this supervisor takes over its predecessor's queue."""
    host = socket.gethostname().replace(".", "-")
    return f"sam3.{host}.{os.getpid()}.{device.replace(':', '')}.{ordinal}"


class Command(BaseCommand):
    help = "Run one SAM3 model worker (a Celery worker with its own queue) per configured device."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--devices", nargs="+", help="Override the devices, e.g. cpu cpu or cuda:0 cuda:1.")
        parser.add_argument("--no-metrics", action="store_true", help="Do not serve WORKER_METRICS_PORT.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REDIS_URL:
            raise CommandError("Model workers need REDIS_URL (the embedded default runs the model inside `serve`).")
        config = settings.CONFIG
        devices = options["devices"] or worker_devices(config.image_model_device, config.video_gpu_list)
        metrics_dir = tempfile.mkdtemp(prefix="sam3-worker-metrics-")
        atexit.register(shutil.rmtree, metrics_dir, True)
        if config.enable_metrics and not options["no_metrics"]:
            serve_metrics(metrics_dir, config.worker_metrics_port)

        def spawn(device: str, queue: str) -> subprocess.Popen:
            env = {**os.environ, WORKER_DEVICE_ENV: device, WORKER_QUEUE_ENV: queue, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
            return subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "sam3site", "worker", "--pool", "threads",
                    "--concurrency", str(config.inference_queue_limit + 4), "--prefetch-multiplier", "1",
                    "-Q", queue, "-n", f"{queue}@%h", "--without-gossip", "--without-mingle",
                    "--loglevel", config.log_level if config.log_level != "TRACE" else "DEBUG",
                ],
                env=env,
            )

        plan = [(device, queue_name(device, ordinal)) for ordinal, device in enumerate(devices)]
        workers = {queue: spawn(device, queue) for device, queue in plan}
        stopping = threading.Event()
        exit_code = 0
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
        signal.signal(signal.SIGINT, lambda *_: stopping.set())
        logger.info("Model workers: {}", ", ".join(f"{queue} on {device}" for device, queue in plan))
        while not stopping.wait(0.5):
            for device, queue in plan:
                code = workers[queue].poll()
                if code is None:
                    continue
                if code == EXIT_MODEL_REQUIRED:
                    logger.critical("Model worker {} cannot load the required model; stopping all workers", queue)
                    stopping.set()
                    exit_code = EXIT_MODEL_REQUIRED
                    break
                logger.warning("Model worker {} exited with {}; restarting it", queue, code)
                # Gone for certain: the other workers claim its sessions now, not after the heartbeat timeout.
                with suppress(redis.RedisError):
                    registry.withdraw(redis_clients.client(), registry.worker_name(queue, workers[queue].pid))
                time.sleep(RESTART_BACKOFF_SECONDS)
                workers[queue] = spawn(device, queue)
        for process in workers.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)  # Celery's warm shutdown
        deadline = time.monotonic() + 30
        for process in workers.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        if exit_code:
            raise SystemExit(exit_code)
