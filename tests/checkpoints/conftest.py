"""Fixtures: the tiny SAM3 in both published layouts (Hugging Face directory, Meta's lone sam3.pt)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.runtime.checkpoints import CONFIG_KEY, hf_to_meta
from inference.runtime.tiny import BPE_FILENAME, WEIGHTS_FILE, write_tiny_checkpoint

IMAGES = Path(__file__).parent / "images"
SHARED_EMBEDDINGS = (
    "tracker_model.prompt_encoder.shared_embedding.positional_embedding",
    "tracker_model.shared_image_embedding.positional_embedding",
)


@pytest.fixture(autouse=True)
def _fresh_redis_and_dirs() -> Iterator[None]:
    """Replaces tests/conftest.py's autouse Redis/upload-dir reset: only the server test needs them."""
    yield


def photos() -> dict[str, np.ndarray]:
    return {path.stem: np.array(Image.open(path).convert("RGB")) for path in sorted(IMAGES.glob("*.jpg"))}


def panning_video(frames: int = 4, width: int = 160, height: int = 120, step: int = 12) -> list[np.ndarray]:
    """A camera pan across a real photo: consecutive crops shifted by ``step`` pixels."""
    photo = photos()["astronaut"]
    return [np.ascontiguousarray(photo[20 : 20 + height, i * step : i * step + width]) for i in range(frames)]


def reference_state(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(directory / WEIGHTS_FILE)


def write_meta_checkpoint(
    reference_dir: Path, path: Path, *, embed_config: bool = True, extra: dict[str, torch.Tensor] | None = None,
    without: tuple[str, ...] = (),
) -> Path:
    """The reference model in Meta's layout, as Meta's release stores it ({"model": state dict}).

    Meta's file also holds tensors transformers does not use; random ones stand in for them
    (the converter must drop them). ``embed_config`` stores the tiny config, which a file of
    another size than the published model needs.
    """
    import json

    state = hf_to_meta(reference_state(reference_dir))
    generator = torch.Generator().manual_seed(1)
    for key in [k for k in state if k.endswith(".attn.qkv.weight")]:
        state[key.replace("qkv.weight", "freqs_cis")] = torch.randn(256, 16, dtype=torch.complex64, generator=generator)
    hidden = state["detector.geometry_encoder.final_proj.weight"].shape[0]
    for name, columns in (("points_direct_project", 2), ("points_pool_project", hidden), ("points_pos_enc_project", hidden)):
        state[f"detector.geometry_encoder.{name}.weight"] = torch.randn(hidden, columns, generator=generator)
        state[f"detector.geometry_encoder.{name}.bias"] = torch.randn(hidden, generator=generator)
    state.update(extra or {})
    for key in without:
        del state[key]
    content: dict[str, object] = {"model": state}
    if embed_config:
        content[CONFIG_KEY] = json.loads((reference_dir / "config.json").read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, path)
    return path


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SAM3 in the Hugging Face layout, with the one prompt-encoder Fourier matrix Meta's model has.

    ``write_tiny_checkpoint`` draws the tracker's two copies of that matrix independently; in
    every real checkpoint they are one tensor (Meta stores it once), so the reference ties them.
    """
    from safetensors.torch import save_file

    directory = write_tiny_checkpoint(tmp_path_factory.mktemp("reference"))
    state = reference_state(directory)
    state[SHARED_EMBEDDINGS[1]] = state[SHARED_EMBEDDINGS[0]].clone()
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    return directory


@pytest.fixture(scope="session")
def meta_checkpoint(reference_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``weights/sam3.pt`` alone (plus the BPE file SAM3_BPE_PATH names), in Meta's layout."""
    weights = tmp_path_factory.mktemp("meta") / "weights"
    path = write_meta_checkpoint(reference_dir, weights / "sam3.pt")
    shutil.copy(reference_dir / BPE_FILENAME, weights / BPE_FILENAME)
    return path
