"""Full-size key and shape coverage against Meta's own SAM3 code, without weights.

Meta's ``sam3`` package (PyPI, pinned 0.1.4) builds the published image+video model; it cannot be
installed beside our lock (it pins huggingface-hub<2, tqdm<4.68, numpy<2.4), so .ci/run unpacks
it with --no-deps into its own directory (``SAM3_META_PACKAGE_DIR``, default .venv/meta-sam3)
and a subprocess imports it from there. Its builder hard-codes CUDA, so the subprocess builds
on PyTorch's ``meta`` device with CUDA device arguments redirected there (and ``linspace``, whose
values the builder reads, on the CPU): no memory, no GPU, no download. It reports every key
with its shape; the converter must map each one onto transformers' full-size ``Sam3VideoModel``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from inference.runtime.checkpoints import (
    check_plan,
    expected_state_shapes,
    hf_to_meta,
    plan_conversion,
    published_config,
)
from inference.runtime.tokenizer import write_small_bpe_file
from tests.conftest import require_meta_package

_DUMP_META_KEYS = r"""
import json, sys
import torch
from torch.overrides import TorchFunctionMode

class CudaToMeta(TorchFunctionMode):
    # Meta's builder creates some buffers with device="cuda"; put them on the meta device instead.
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda":
            kwargs["device"] = "meta"
        elif device is None and func is torch.linspace:  # drop-path rates are read with .item()
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)

from sam3 import model_builder

with torch.device("meta"), CudaToMeta():
    video = model_builder.build_sam3_video_model(
        checkpoint_path=None, load_from_HF=False, bpe_path=sys.argv[1], device="meta")
    image = model_builder.build_sam3_image_model(
        bpe_path=sys.argv[1], device="meta", checkpoint_path=None, load_from_HF=False, enable_inst_interactivity=True)

def shapes(model):
    return {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()}

print("KEYS" + json.dumps({"video": shapes(video), "image": shapes(image)}))
"""


@pytest.fixture(scope="module")
def meta_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, tuple[tuple[int, ...], torch.dtype]]]:
    package_dir = require_meta_package()
    bpe = write_small_bpe_file(tmp_path_factory.mktemp("bpe") / "bpe.txt.gz")  # read by Meta's tokenizer, never used
    env = {**os.environ, "PYTHONPATH": str(package_dir), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", _DUMP_META_KEYS, str(bpe)], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("KEYS")]
    assert done.returncode == 0 and lines, f"Meta's model did not build on the meta device:\n{done.stderr[-3000:]}"
    raw = json.loads(lines[0][4:])
    return {model: {k: (tuple(shape), getattr(torch, dtype)) for k, (shape, dtype) in keys.items()}
            for model, keys in raw.items()}


def test_every_meta_key_maps_onto_full_size_transformers(meta_keys) -> None:
    video = meta_keys["video"]
    state = {k: torch.empty(shape, dtype=dtype, device="meta") for k, (shape, dtype) in video.items()}
    plan = plan_conversion(state)
    assert plan.unknown == []
    layers = {int(k.split(".blocks.")[1].split(".")[0]) for k in video if ".trunk.blocks." in k}
    # Dropped, each for a reason: RoPE tables transformers computes itself, and the point inputs of
    # the geometry encoder, which transformers' detector does not have (it takes exemplar boxes).
    assert sorted(plan.dropped) == sorted(
        [f"detector.backbone.vision_backbone.trunk.blocks.{i}.attn.freqs_cis" for i in layers]
        + [f"detector.geometry_encoder.points_{name}.{p}" for name in ("direct_project", "pool_project", "pos_enc_project")
           for p in ("weight", "bias")]
    )
    expected = expected_state_shapes(published_config())
    check_plan(plan, expected)  # no unknown, unfilled or extra key, every shape equal
    produced = [o.name for o in plan.outputs]
    assert len(produced) == len(set(produced)) == len(expected)
    assert len(layers) == 32 and video["detector.backbone.vision_backbone.trunk.pos_embed"][0] == (1, 577, 1024)


def test_inverse_reproduces_meta_layout_at_full_size(meta_keys) -> None:
    from transformers import Sam3VideoModel

    with torch.device("meta"):
        model = Sam3VideoModel(published_config())
    inverse = hf_to_meta(model.state_dict())
    video = meta_keys["video"]
    kept = {k: v for k, v in video.items() if not k.endswith("freqs_cis") and ".points_" not in k}
    assert {k: tuple(t.shape) for k, t in inverse.items()} == {k: shape for k, (shape, _) in kept.items()}


def test_meta_image_model_reads_the_same_keys(meta_keys) -> None:
    # Meta's image builder loads sam3.pt's detector.* and tracker.* (as inst_interactive_predictor.model.*):
    # one file, one key set, covered above.
    video = meta_keys["video"]
    prefix = "inst_interactive_predictor.model."
    image = {f"tracker.{k[len(prefix):]}" if k.startswith(prefix) else f"detector.{k}": v
             for k, v in meta_keys["image"].items()}
    assert image.items() <= video.items()
    assert {k.split(".")[0] for k in image} == {"detector", "tracker"}
