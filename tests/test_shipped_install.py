"""The install users run, proven (issue 17).

.ci/run copies the repository as a clone holds it into ``SAM3_SHIPPED_DIR`` and installs it with
``scripts/bootstrap.sh requirements.txt``, the script that ``scripts/serve.sh`` and the Dockerfile
run: requirements.txt at the lock's versions, nothing from the development set. Against that
environment: every server module imports; the README's first command serves images, a video
session over its websocket and a live session; ``run_workers`` + ``serve`` in the Redis mode
answer an image. The clients here (the Python client) run in the test environment, as a user's
would run elsewhere.

``bootstrap.sh`` itself: a failed pip install stops it with pip's message and leaves no stamp.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sam3_client import Client

from tests.conftest import ROOT, free_port, launch_workers, mp4_bytes, png_bytes, stop_process_group, wait_until_ready

SHIPPED = Path(os.environ["SAM3_SHIPPED_DIR"]) if os.environ.get("SAM3_SHIPPED_DIR") else None
needs_shipped = pytest.mark.skipif(
    SHIPPED is None, reason="SAM3_SHIPPED_DIR unset: .ci/run makes the runtime-only install these tests use"
)
LOW = 0.0  # the tiny random model scores low: a zero threshold makes instances appear
FRAMES = 6


def user_environment(**settings: str) -> dict[str, str]:
    """A shell's environment: none of the variables pytest sets for the test servers."""
    kept = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")
    return {**{k: os.environ[k] for k in kept if k in os.environ}, "OMP_NUM_THREADS": "1", **settings}


def shipped_python() -> str:
    assert SHIPPED is not None
    return str(SHIPPED / ".venv" / "bin" / "python")


@needs_shipped
def test_the_runtime_environment_has_requirements_txt_alone() -> None:
    """The copy's venv is what a user gets: no development package (the check below would pass otherwise)."""
    probe = "import importlib.util as u; print(*[m for m in ('pytest', 'requests', 'schemathesis', 'httpx') if u.find_spec(m)])"
    found = subprocess.run([shipped_python(), "-c", probe], capture_output=True, text=True, check=True, timeout=60).stdout
    assert found.strip() == "", f"development packages in the runtime environment: {found}"


@needs_shipped
def test_every_server_module_imports_in_the_runtime_environment(tmp_path: Path) -> None:
    assert SHIPPED is not None
    result = subprocess.run(
        [shipped_python(), ".ci/import_server_modules.py"], cwd=SHIPPED, capture_output=True, text=True, timeout=600,
        env=user_environment(DATA_DIR=str(tmp_path / "var")),
    )
    assert result.returncode == 0, result.stderr[-8000:]
    imported, _, total = result.stdout.split()[1:4]
    assert imported == total and int(total) > 100, result.stdout


@pytest.fixture
def quick_start(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`bash scripts/serve.sh` in the copy, as the README says: no database, no Redis, no weights."""
    assert SHIPPED is not None
    shutil.rmtree(SHIPPED / "var", ignore_errors=True)  # a fresh machine's state
    port = free_port()
    env = user_environment(
        SERVER_HOST="127.0.0.1", SERVER_PORT=str(port), METRICS_PORT=str(free_port()),
        UPLOAD_DIR=str(tmp_path / "uploads"), OUTPUT_DIR=str(tmp_path / "outputs"),
    )
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        ["bash", "scripts/serve.sh"], cwd=SHIPPED, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process, log)
        assert "IMAGE_MODEL_DEVICE=cpu" in log.read_text(errors="replace")  # serve.sh picks the CPU without nvidia-smi
        yield url, env
    finally:
        stop_process_group(process)


@needs_shipped
@pytest.mark.slow
def test_the_readme_quick_start_serves_images_sessions_and_live(quick_start, tmp_path: Path) -> None:
    assert SHIPPED is not None
    url, env = quick_start
    key = subprocess.run(  # the README's "Keys and a first call", in the runtime environment
        [shipped_python(), "manage.py", "create_api_key", "--user", "alice", "--name", "laptop"],
        cwd=SHIPPED, env=env, capture_output=True, text=True, timeout=120, check=True,
    ).stdout.strip()
    video = tmp_path / "clip.mp4"
    video.write_bytes(mp4_bytes(frames=FRAMES))
    with Client(url, key) as client:
        segmented = client.segment(png_bytes(), text="dog", threshold=LOW)
        assert segmented.model["tiny_random"] and segmented.results[0].instances
        assert segmented.results[0].instances[0].mask.array.shape == (48, 64)

        with client.sessions.create(video) as session:
            assert session.status == "ready" and session.info.frame_count == FRAMES
            session.add_text("dog", frame=0)
            frames = list(session.propagate())  # over the session's websocket
            assert [f.frame for f in frames] == list(range(FRAMES))

        live = client.live(video, text="dog")
        answered = [result.seq for result in live]
        assert answered and answered == sorted(answered)  # every answer in order (frames may be skipped, not reordered)


@needs_shipped
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_run_workers_and_serve_of_the_redis_mode_answer_an_image(
    start_server, make_client, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    python = shipped_python()
    workers = launch_workers(tmp_path, tiny_checkpoint, python=python, cwd=SHIPPED)
    try:
        server = start_server(python=python, cwd=SHIPPED)
        alice = make_client("alice")
        answer = requests.post(
            f"{server.url}/api/v1/segment/", headers={"X-API-Key": alice.key}, timeout=120,
            files={"file": ("a.png", png_bytes())}, data={"prompts": '[{"text": "dog"}]', "threshold": "0"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["worker"] in workers.names  # computed by the runtime environment's model worker
    finally:
        workers.stop()


def test_a_failed_pip_install_stops_bootstrap_with_pips_message(tmp_path: Path) -> None:
    """No half-built .venv marked installed: the exit status and pip's own words reach the caller."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "bootstrap.sh", tmp_path / "scripts")
    (tmp_path / "requirements.txt").write_text("sam3-no-such-package-anywhere==1.0\n")
    (tmp_path / "constraints.txt").write_text("")
    env = {**os.environ, "PIP_NO_INDEX": "1", "PYTHON": sys.executable}  # offline: the package cannot be found
    result = subprocess.run(
        ["bash", "scripts/bootstrap.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "sam3-no-such-package-anywhere" in result.stderr and "failed" in result.stderr
    assert not list((tmp_path / ".venv").glob(".installed-*"))
