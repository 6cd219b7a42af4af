"""Fixtures: one Label Studio and one SAM3 server (the embedded quick start, tiny model) for the
whole run (tests/labelstudio/label_studio.py starts them). Without Label Studio installed these tests
are skipped, except under CI, where that is a failure."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import stop_process_group
from tests.labelstudio.label_studio import LABEL_STUDIO_VENV, Backend, LabelStudio, start_label_studio, start_sam3_backend


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    if not (LABEL_STUDIO_VENV / "bin" / "label-studio").exists():
        message = f"Label Studio is not installed at {LABEL_STUDIO_VENV} (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    studio = start_label_studio(tmp_path_factory.mktemp("label-studio"))
    yield studio
    stop_process_group(studio.process)


@pytest.fixture(scope="session")
def sam3_backend(label_studio: LabelStudio, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    backend = start_sam3_backend(
        tmp_path_factory.mktemp("sam3-for-label-studio"), label_studio, tiny_checkpoint,
        # The tiny model's random weights score every detection about 0.25: these thresholds make concepts find a few.
        IMAGE_MODEL_CONFIDENCE_THRESHOLD="0.255", VIDEO_DETECTION_THRESHOLD="0.25",
    )
    yield backend
    stop_process_group(backend.server.process)
