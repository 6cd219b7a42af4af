"""The web <-> model-worker seam holds at run time: a web process that has served every endpoint and
a whole video session over its websocket (Redis mode, a separate model worker) never loaded torch.

The import contracts (pyproject.toml [tool.importlinter], `lint-imports`) check the code; this test
checks the running process: its memory maps (no libtorch) and its resident size.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests
from websockets.sync.client import connect

from tests.conftest import mp4_bytes, png_bytes
from tests.test_sessions import FRAMES, api, next_of_type, ws_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
WEB_RSS_LIMIT_MB = 250  # a web process with torch mapped is about 1 GB


def _daphne_children(supervisor_pid: int) -> list[int]:
    children = Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children").read_text().split()
    if not children:  # kernels without the children file: ask pgrep
        children = subprocess.run(["pgrep", "-P", str(supervisor_pid)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in children]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_web_process_never_loads_torch(start_server, model_worker, alice) -> None:
    server = start_server()
    key = alice.key
    # accounts: me, keys
    assert api(server, key, "GET", "/me/").status_code == 200
    assert api(server, key, "GET", "/keys/").status_code == 200
    # uploads: an image and a video
    image = api(server, key, "POST", "/uploads/", files={"file": ("a.png", png_bytes())})
    assert image.status_code == 201, image.text
    video = api(server, key, "POST", "/uploads/", files={"file": ("v.mp4", mp4_bytes(frames=FRAMES))})
    assert video.status_code == 201, video.text
    assert api(server, key, "GET", "/uploads/").status_code == 200
    # segmentation: by upload and inline
    by_upload = api(server, key, "POST", "/segment/", json={"image": image.json()["id"], "prompts": [{"text": "dog"}], "threshold": 0})
    assert by_upload.status_code == 200, by_upload.text
    inline = api(server, key, "POST", "/segment/", files={"file": ("x.png", png_bytes(seed=1))},
                 data={"prompts": json.dumps([{"points": [[10, 10]], "point_labels": [1]}])})
    assert inline.status_code == 200, inline.text
    # a video session: created over REST, then prompted and propagated over its websocket, then closed
    created = api(server, key, "POST", "/sessions/", json={"video": video.json()["id"]})
    assert created.status_code == 201, created.text
    session_id = created.json()["id"]
    with connect(ws_url(server, session_id), additional_headers={"X-API-Key": key}, open_timeout=10) as socket:
        assert json.loads(socket.recv(timeout=10))["status"] == "ready"
        socket.send(json.dumps({"type": "prompt", "frame": 0, "box": [5, 5, 40, 40]}))
        assert next_of_type(socket, "prompt_result")["objects"]
        socket.send(json.dumps({"type": "propagate", "direction": "forward"}))
        assert next_of_type(socket, "propagation")["direction"] == "forward"
        frames = []
        while (message := json.loads(socket.recv(timeout=60)))["type"] != "done":
            if message["type"] == "frame":
                frames.append(message["frame"])
        assert frames == list(range(FRAMES))
    assert api(server, key, "GET", f"/sessions/{session_id}/frames/").json()["count"] == FRAMES
    assert api(server, key, "DELETE", f"/sessions/{session_id}/").status_code == 204
    assert requests.get(f"{server.url}/readyz", timeout=10).status_code == 200

    children = _daphne_children(server.process.pid)
    assert children, "no daphne process found under manage.py serve"
    for pid in children:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "libtorch" not in maps, f"daphne process {pid} mapped libtorch"
        assert "/torch/" not in maps, f"daphne process {pid} mapped torch's extension modules"
        rss = _rss_mb(pid)
        print(f"daphne process {pid}: VmRSS {rss:.0f} MB")
        assert rss <= WEB_RSS_LIMIT_MB, f"daphne process {pid} uses {rss:.0f} MB"
