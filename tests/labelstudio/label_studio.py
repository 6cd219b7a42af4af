"""A real Label Studio (1.23.2, in its own virtual environment: its Django pins differ from ours) on
SQLite, driven through its own API the way its frontend and data manager drive it, and the embedded
SAM3 server it connects to as its ML backend. Used by tests/labelstudio and bench/bench_label_studio.py.

.ci/run installs Label Studio into .venv/label-studio (tests/labelstudio/requirements.txt, pinned by
tests/labelstudio/constraints.txt); LABEL_STUDIO_VENV names another one.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests

from tests.processes import ROOT, LiveServer, free_port, serve, stop_process_group

LABEL_STUDIO_VENV = Path(os.environ.get("LABEL_STUDIO_VENV", ROOT / ".venv" / "label-studio"))
PHOTOS = ROOT / "tests" / "checkpoints" / "images"

IMAGE_CONFIG = """
<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="mask" toName="image">
    <Label value="Cat" background="#ff0000"/>
    <Label value="Cup" predicted_values="coffee cup" background="#0000ff"/>
  </BrushLabels>
  <KeyPointLabels name="click" toName="image" smart="true">
    <Label value="Cat" smart="true" background="#ff0000"/>
    <Label value="Cup" smart="true" background="#0000ff"/>
  </KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true">
    <Label value="Cat" background="#ff0000"/>
    <Label value="Cup" background="#0000ff"/>
  </RectangleLabels>
</View>
"""

VIDEO_CONFIG = """
<View>
  <Labels name="videoLabels" toName="video">
    <Label value="Square" background="#00ff00"/>
  </Labels>
  <Video name="video" value="$video" framerate="10"/>
  <VideoRectangle name="box" toName="video"/>
</View>
"""


@dataclass
class LabelStudio:
    url: str
    token: str  # the admin's legacy token
    email: str
    password: str
    process: subprocess.Popen
    log_path: Path

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Token {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=120, **kwargs)

    def create_project(self, title: str, label_config: str) -> int:
        answer = self.api("POST", "/api/projects", json={"title": title, "label_config": label_config})
        assert answer.status_code == 201, answer.text
        return answer.json()["id"]

    def import_files(self, project: int, *paths: Path) -> list[dict[str, Any]]:
        """Tasks made from files uploaded to Label Studio (their data holds /data/upload/... URLs)."""
        files = [(f"file{index}", (path.name, path.read_bytes())) for index, path in enumerate(paths)]
        answer = self.api("POST", f"/api/projects/{project}/import", files=files)
        assert answer.status_code == 201, answer.text
        return self.tasks(project)

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        answer = self.api("POST", f"/api/projects/{project}/import", json=tasks)
        assert answer.status_code == 201, answer.text
        return self.tasks(project)

    def tasks(self, project: int) -> list[dict[str, Any]]:
        answer = self.api("GET", "/api/tasks", params={"project": project, "page_size": 100})
        assert answer.status_code == 200, answer.text
        return sorted(answer.json()["tasks"], key=lambda task: task["id"])

    def connect(self, project: int, backend_url: str, password: str, *, user: str = "sam3") -> requests.Response:
        """Label Studio's own "Connect model" call: it asks /health and /setup of the backend first."""
        return self.api("POST", "/api/ml", json={
            "url": backend_url, "project": project, "is_interactive": True, "title": "SAM3",
            "auth_method": "BASIC_AUTH", "basic_auth_user": user, "basic_auth_pass": password,
        })

    def interactive(self, backend: int, task: int, context: dict[str, Any]) -> dict[str, Any]:
        """What the labeling frontend asks when the annotator uses a smart tool."""
        answer = self.api("POST", f"/api/ml/{backend}/interactive-annotating", json={"task": task, "context": context})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def retrieve_predictions(self, project: int, task_ids: list[int]) -> list[dict[str, Any]]:
        """The data manager's "Retrieve predictions" action, then what Label Studio stored."""
        answer = self.api(
            "POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
            json={"selectedItems": {"all": False, "included": task_ids}},
        )
        assert answer.status_code == 200, answer.text
        stored = []
        for task in task_ids:
            predictions = self.api("GET", "/api/predictions", params={"task": task})
            assert predictions.status_code == 200, predictions.text
            stored += predictions.json()
        return stored

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_label_studio(base: Path, venv: Path = LABEL_STUDIO_VENV) -> LabelStudio:
    """Label Studio on a free port of 127.0.0.1, data (SQLite) under ``base``, an admin with a
    legacy token; returned once its API answers (the first start runs its migrations: ~40 s)."""
    binary = venv / "bin" / "label-studio"
    port, token = free_port(), secrets.token_hex(20)
    email, password = "annotator@example.com", secrets.token_urlsafe(12)
    url = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",  # nothing of ours (ALLOWED_HOSTS, DATABASE_URL...)
        "LABEL_STUDIO_BASE_DATA_DIR": str(base / "base"), "HOME": str(base),
        # Our server is on loopback: Label Studio refuses such ML backends unless told otherwise.
        "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false",
    }
    log_path = base / "label-studio.log"
    process = subprocess.Popen(
        [str(binary), "start", "--no-browser", f"--data-dir={base / 'data'}", f"--host={url}", "--internal-host=127.0.0.1",
         f"--port={port}", f"--username={email}", f"--password={password}", f"--user-token={token}", "--enable-legacy-api-token"],
        cwd=base, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    studio = LabelStudio(url, token, email, password, process, log_path)
    deadline = time.monotonic() + 240  # the first start runs Label Studio's migrations
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process_group(process)
            raise RuntimeError(f"Label Studio did not start:\n{studio.log()[-5000:]}")
        try:
            if studio.api("GET", "/api/projects").status_code == 200:
                break
        except requests.RequestException:
            pass
        time.sleep(1)
    return studio


@dataclass
class Backend:
    server: LiveServer
    key: str

    @property
    def url(self) -> str:
        return f"{self.server.url}/label-studio"


def start_sam3_backend(directory: Path, label_studio: LabelStudio, checkpoint: Path, **env_overrides: str) -> Backend:
    """The README's quick start (embedded: SQLite, SAM3 in process) told where Label Studio is, and a key."""
    env = {
        "DATABASE_URL": "", "REDIS_URL": "", "DJANGO_SECRET_KEY": "", "DATA_DIR": str(directory / "var"),
        "UPLOAD_DIR": str(directory / "uploads"), "OUTPUT_DIR": str(directory / "outputs"), "SAM3_CHECKPOINT": str(checkpoint),
        "OMP_NUM_THREADS": "1", "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token, **env_overrides,
    }
    server = serve(directory, migrate=True, ready_path="/readyz", **env)
    key = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", "--user", "annotator"], cwd=ROOT, env={**os.environ, **env},
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout.strip()
    return Backend(server, key)


def decode_with_label_studio(rles: list[list[int]], shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Brush RLEs decoded by Label Studio's own decoder (label_studio_sdk.converter.brush.decode_rle),
    run in Label Studio's environment: the alpha channel of each, as a 0/1 mask."""
    script = (
        "import json, sys\n"
        "from label_studio_sdk.converter.brush import decode_rle\n"
        "print(json.dumps([decode_rle(rle)[3::4].tolist() for rle in json.load(sys.stdin)]))\n"
    )
    done = subprocess.run(
        [str(LABEL_STUDIO_VENV / "bin" / "python"), "-c", script], input=json.dumps(rles), capture_output=True, text=True,
        check=True, timeout=300,
    )
    decoded = json.loads(done.stdout)
    return [(np.array(flat, dtype=np.uint8).reshape(shape) > 0).astype(np.uint8) for flat, shape in zip(decoded, shapes, strict=True)]
