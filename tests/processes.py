"""Real server processes for tests and benchmarks: free ports, `manage.py serve` started as the
README says, process groups stopped. No Django here, so scripts outside pytest can use it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    metrics_url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def serve(directory: Path, *, migrate: bool, ready_path: str, **env_overrides: str) -> LiveServer:
    """`manage.py serve` (the README's server command) on free ports, once ``ready_path`` answers 200."""
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ, "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port), "METRICS_PORT": str(metrics_port), **env_overrides,
    }
    log_path = directory / f"server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", *([] if migrate else ["--no-migrate"])],
        cwd=ROOT, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    server = LiveServer(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", process, log_path)
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process_group(process)
            raise RuntimeError(f"the server did not become ready:\n{server.log()}")
        try:
            if requests.get(f"{server.url}{ready_path}", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.3)


def wait_until_ready(url: str, process: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    """Until ``url``/readyz answers 200; AssertionError with the log's end if the process exits or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not ready (exit code {process.poll()}):\n{log.read_text(errors='replace')[-6000:]}")


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the group (a supervisor and its children), SIGKILL what is left after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
