"""Servers for the client's tests, each shared by a module: the embedded default (one process,
SQLite, the tiny SAM3 in process) and a web process of the Postgres/Redis deployment; and the
`sam3` command line as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LiveServer, Workers, launch_workers, serve, stop_process_group
from tests.conftest import _test_database_url as test_database_url

SAM3 = Path(sys.executable).with_name("sam3")  # the console script the package installs


def static_keys() -> list[str]:
    """The keys of API_KEYS (pytest's env): each acts as its own user on any server of this run."""
    return json.loads(os.environ["API_KEYS"])


@pytest.fixture(scope="module")
def embedded_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The embedded default (no DATABASE_URL / REDIS_URL: it migrates its own SQLite and runs the
    tiny SAM3 in process), as `scripts/serve.sh` starts it; ready once the model is loaded."""
    directory = tmp_path_factory.mktemp("embedded")
    server = serve(
        directory, migrate=True, ready_path="/readyz", DATABASE_URL="", REDIS_URL="", DATA_DIR=str(directory / "var"),
        UPLOAD_DIR=str(directory / "uploads"), OUTPUT_DIR=str(directory / "outputs"), SAM3_CHECKPOINT=str(tiny_checkpoint),
    )
    yield server
    stop_process_group(server.process)


@pytest.fixture(scope="module")
def deployment_server(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A web process of the Postgres/Redis deployment (the test database), shared by a module: the
    suite's ``start_server`` starts one per test."""
    server = serve(tmp_path_factory.mktemp("web"), migrate=False, ready_path="/healthz", DATABASE_URL=test_database_url())
    yield server
    stop_process_group(server.process)


@pytest.fixture(scope="module")
def worker(django_db_setup: None, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """One model worker of the deployment, shared by a module."""
    workers = launch_workers(tmp_path_factory.mktemp("workers"), tiny_checkpoint)
    yield workers
    workers.stop()


@pytest.fixture
def server(deployment_server: LiveServer, worker: Workers) -> LiveServer:
    return deployment_server


def served(server: LiveServer, method: str, path: str, status: int) -> int:
    """How many such requests the server logged (one line per request: method, path, status)."""
    return len(re.findall(rf"{method} {re.escape(path)} {status} ", server.log()))


def sam3(*args: str, server: str | None = None, key: str | None = None, timeout: float = 120, cwd: Path | None = None,
         **env: str) -> subprocess.CompletedProcess[str]:
    """Run the installed `sam3` command; the server and key go through the environment, as a user would set them."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SAM3_")}
    environment.update({"SAM3_SERVER_URL": server or "", "SAM3_API_KEY": key or "", **env})
    return subprocess.run([str(SAM3), *args], env=environment, capture_output=True, text=True, timeout=timeout, cwd=cwd)
