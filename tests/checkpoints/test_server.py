"""``SAM3_CHECKPOINT=/path/to/sam3.pt`` alone serves: the real server converts it once, then reuses the cache."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from inference.runtime.checkpoints import FORMAT_VERSION
from inference.runtime.tiny import BPE_FILENAME
from tests.conftest import stop_process_group

from .conftest import IMAGES


def _ready(url: str) -> dict:
    deadline = time.monotonic() + 120
    while (ready := requests.get(f"{url}/readyz", timeout=10)).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert ready.status_code == 200, ready.text
    return ready.json()["checks"]["model"]["model"]


@pytest.mark.slow
def test_server_converts_a_lone_sam3_pt_once_and_reuses_it(start_server: Callable, meta_checkpoint: Path,
                                                           tmp_path: Path) -> None:
    assert sorted(p.name for p in meta_checkpoint.parent.iterdir()) == [BPE_FILENAME, "sam3.pt"]
    digest = hashlib.sha256(meta_checkpoint.read_bytes()).hexdigest()
    env = {
        "DATABASE_URL": "", "REDIS_URL": "", "DATA_DIR": str(tmp_path / "var"),
        "SAM3_CHECKPOINT": str(meta_checkpoint), "SAM3_BPE_PATH": str(meta_checkpoint.parent / BPE_FILENAME),
    }
    converted = tmp_path / "var" / "checkpoints" / f"{digest}.v{FORMAT_VERSION}"

    first = start_server(**env)
    model = _ready(first.url)
    assert model["checkpoint_sha256"] == digest[:12] and model["name"] == "sam3.pt" and not model["tiny_random"]
    response = requests.post(
        f"{first.url}/api/v1/segment/", files={"file": ("coffee.jpg", (IMAGES / "coffee.jpg").read_bytes())},
        data={"prompts": '[{"text": "cup"}, {"points": [[150, 100]]}]', "threshold": "0"}, timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"]["checkpoint_sha256"] == digest[:12]
    assert body["results"][0]["instances"] and body["results"][1]["instances"]
    assert f"Converting {meta_checkpoint}" in first.log() and "Converted sam3.pt" in first.log()
    written = {p.name: p.stat().st_mtime_ns for p in converted.iterdir()}
    stop_process_group(first.process)

    second = start_server(**env)
    assert _ready(second.url)["checkpoint_sha256"] == digest[:12]
    assert "Using the cached conversion of sam3.pt" in second.log() and "Converting" not in second.log()
    assert {p.name: p.stat().st_mtime_ns for p in converted.iterdir()} == written
