"""Run the web server: SERVER_WORKERS daphne processes sharing one listening socket.

This process only supervises: it binds SERVER_HOST:SERVER_PORT once, hands the socket to each
daphne child (``--fd``), restarts children that die, and serves the children's aggregated
Prometheus metrics on METRICS_PORT. Nothing else (manage.py commands, Celery) binds that port.
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
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.utils import autoreload
from loguru import logger

from sam3site.processes import EXIT_MODEL_REQUIRED, SERVING_ENV

RESTART_BACKOFF_SECONDS = 1.0
WEBSOCKET_HARD_LIMIT_BYTES = 4 * 1024 * 1024  # above this daphne closes the connection with 1009 (sam3site.daphne_server)


class Command(BaseCommand):
    help = "Serve HTTP and websockets (daphne) on SERVER_HOST:SERVER_PORT with SERVER_WORKERS processes."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--no-migrate", action="store_true", help="Do not apply migrations first (the embedded default does)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = settings.CONFIG
        if config.server_workers > 1 and not settings.REDIS_URL:
            raise CommandError(
                "SERVER_WORKERS > 1 needs REDIS_URL: the embedded default keeps channel layer, cache and "
                "inference inside one process."
            )
        if settings.AUTO_MIGRATE and not options["no_migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        self.check(display_num_errors=False)
        if config.reload:
            if config.server_workers > 1:
                raise CommandError("RELOAD=True runs a single worker; set SERVER_WORKERS=1.")
            autoreload.run_with_reloader(self._supervise)
        else:
            self._supervise()

    def _supervise(self) -> None:
        config = settings.CONFIG
        listener = socket.socket(socket.AF_INET6 if ":" in config.server_host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((config.server_host, config.server_port))
        listener.listen(1024)
        listener.set_inheritable(True)

        metrics_dir = tempfile.mkdtemp(prefix="sam3-metrics-")
        atexit.register(shutil.rmtree, metrics_dir, True)
        child_env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir, SERVING_ENV: "1"}
        if config.enable_metrics:
            serve_metrics(metrics_dir, config.metrics_port)

        def spawn() -> subprocess.Popen:
            return subprocess.Popen(
                [
                    sys.executable, "-m", "sam3site.daphne_server", "--fd", str(listener.fileno()), "--proxy-headers",
                    "--access-log", os.devnull, "--application-close-timeout", "30",
                    # above daphne's 1 MiB default, so that messages over the consumers' own limit
                    # get an error message instead of a dropped connection (sessions.consumers)
                    "--websocket-max-message-size", str(WEBSOCKET_HARD_LIMIT_BYTES),
                    "--websocket-max-frame-size", str(WEBSOCKET_HARD_LIMIT_BYTES),
                    "sam3site.asgi:application",
                ],
                pass_fds=(listener.fileno(),),
                env=child_env,
            )

        supervisor = _Children(spawn, config.server_workers)
        atexit.register(supervisor.stop)  # also on the reloader's exit

        if not config.reload:  # the reloader owns the signals of its own process
            signal.signal(signal.SIGTERM, lambda *_: supervisor.stopping.set())
            signal.signal(signal.SIGINT, lambda *_: supervisor.stopping.set())
        logger.info(
            "Serving on http://{}:{} with {} worker(s); metrics {}",
            config.server_host, config.server_port, config.server_workers,
            f"on :{config.metrics_port}" if config.enable_metrics else "off",
        )
        supervisor.watch()


class _Children:
    """The daphne processes: restarted when one dies, stopped together."""

    def __init__(self, spawn: Callable[[], subprocess.Popen], count: int) -> None:
        self.spawn = spawn
        self.stopping = threading.Event()
        self.processes = [spawn() for _ in range(count)]

    def watch(self) -> None:
        while not self.stopping.wait(0.5):
            for index, child in enumerate(self.processes):
                if child.poll() == EXIT_MODEL_REQUIRED:  # the embedded model is required and did not load
                    self.stop()
                    raise SystemExit(EXIT_MODEL_REQUIRED)
                if child.poll() is not None and not self.stopping.is_set():
                    logger.warning("Web worker {} exited with {}; restarting it", child.pid, child.returncode)
                    time.sleep(RESTART_BACKOFF_SECONDS)
                    self.processes[index] = self.spawn()
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        for child in self.processes:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + 20
        for child in self.processes:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()


def serve_metrics(metrics_dir: str, port: int) -> None:
    """Export the metrics that this process's children write to ``metrics_dir``."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=metrics_dir)
    start_http_server(port, registry=registry)
