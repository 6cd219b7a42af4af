"""Servers for the client's tests: the embedded default (one process, SQLite, the tiny SAM3 in
process) shared by a module, and helpers for the `sam3` command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, LiveServer, free_port, stop_process_group

SAM3 = Path(sys.executable).with_name("sam3")  # the console script the package installs


def static_keys() -> list[str]:
    """The keys of API_KEYS (pytest's env): each acts as its own user on any server of this run."""
    return json.loads(os.environ["API_KEYS"])


@pytest.fixture(scope="module")
def embedded_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """`manage.py serve` on the embedded default (no DATABASE_URL / REDIS_URL: it migrates its own
    SQLite and runs the tiny SAM3 in process), as `scripts/serve.sh` starts it."""
    directory = tmp_path_factory.mktemp("embedded")
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ, "DATABASE_URL": "", "REDIS_URL": "", "DATA_DIR": str(directory / "var"),
        "UPLOAD_DIR": str(directory / "uploads"), "OUTPUT_DIR": str(directory / "outputs"), "SAM3_CHECKPOINT": str(tiny_checkpoint),
        "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port), "METRICS_PORT": str(metrics_port),
    }
    log_path = directory / "server.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve"], cwd=ROOT, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = LiveServer(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", process, log_path)
    try:
        deadline = time.monotonic() + 120
        while True:  # ready: migrated, and the model loaded
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the embedded server did not become ready:\n{server.log()}")
            try:
                if requests.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        yield server
    finally:
        stop_process_group(process)


def sam3(*args: str, server: str | None = None, key: str | None = None, timeout: float = 120, cwd: Path | None = None,
         **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `sam3` command; the server and key go through the environment, as a user would set them."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SAM3_")}
    environment.update({"SAM3_SERVER_URL": server or "", "SAM3_API_KEY": key or "", **env})
    return subprocess.run([str(SAM3), *args], env=environment, capture_output=True, text=True, timeout=timeout, cwd=cwd)
