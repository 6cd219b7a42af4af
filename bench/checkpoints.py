"""Model checkpoints for the benchmarks: the tiny test model and the full-size random SAM3.

No real SAM3 weights can be downloaded here, so the "full" model is the published architecture
(``Sam3VideoConfig()`` defaults, ~860 M parameters) with random weights: the compute per image is
the real one, only the masks are meaningless. Both are written in the Hugging Face layout the
server loads, through the same files ``inference.runtime.tiny.write_tiny_checkpoint`` writes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

FULL_CACHE_DIR = Path("/tmp/sam3-bench-full")
TINY_CACHE_DIR = Path("/tmp/sam3-bench-tiny")
# Written last: a directory without it is a half-written checkpoint (interrupted run) and is redone.
COMPLETE_MARKER = "BENCH_CHECKPOINT_COMPLETE"
PUBLISHED_RESOLUTION = 1008


def write_random_full_checkpoint(directory: Path, resolution: int = PUBLISHED_RESOLUTION, seed: int = 0) -> Path:
    """The full-size SAM3 architecture with random weights, in the published layout.

    ``resolution`` is the input size recorded in config.json and the processor files. Weights do
    not depend on it (the ViT position embeddings are tiled from a fixed 336 px grid), so the
    benchmarks write the published 1008 once and override the size at load time
    (IMAGE_MODEL_RESOLUTION / ``load_sam3(resolution=...)``), exercising the server's own path.
    No TINY_RANDOM_MODEL marker: the server must treat it like a real checkpoint.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import Sam3VideoConfig, Sam3VideoModel

    from inference.runtime.loader import build_processors
    from inference.runtime.tiny import BPE_FILENAME, WEIGHTS_FILE
    from inference.runtime.tokenizer import build_clip_tokenizer, write_small_bpe_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / COMPLETE_MARKER).unlink(missing_ok=True)
    # The small test BPE file: its vocabulary is smaller than the model's 49408 text embeddings,
    # which the loader accepts (every id the tokenizer produces exists in the embedding table).
    bpe_path = write_small_bpe_file(directory / BPE_FILENAME)
    tokenizer = build_clip_tokenizer(bpe_path)

    config = Sam3VideoConfig()
    patch = config.detector_config.vision_config.backbone_config.patch_size
    config.image_size = resolution
    config.low_res_mask_size = 4 * resolution // patch  # as the loader does for an override
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam3VideoModel(config).eval()
    model.config.save_pretrained(directory)
    # Plain state_dict names, as write_tiny_checkpoint explains (not model.save_pretrained).
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    parameters = sum(p.numel() for p in model.parameters())
    del model, state

    _, _, video_processor = build_processors(tokenizer, resolution)
    video_processor.save_pretrained(directory)
    (directory / COMPLETE_MARKER).write_text(
        json.dumps({"parameters": parameters, "resolution": resolution, "seed": seed}) + "\n"
    )
    return directory


def ensure_checkpoint(model: str) -> Path:
    """The checkpoint directory for ``model`` ("tiny" or "full"), written once and reused."""
    from inference.runtime.tiny import write_tiny_checkpoint

    if model == "tiny":
        directory = TINY_CACHE_DIR
        if not (directory / COMPLETE_MARKER).is_file():
            write_tiny_checkpoint(directory)
            (directory / COMPLETE_MARKER).write_text("{}\n")
        return directory
    if model == "full":
        directory = FULL_CACHE_DIR
        if not (directory / COMPLETE_MARKER).is_file():
            started = time.perf_counter()
            print(f"writing the full-size random SAM3 to {directory} (once, ~3.4 GB) ...", flush=True)
            write_random_full_checkpoint(directory)
            print(f"  written in {time.perf_counter() - started:.0f} s", flush=True)
        return directory
    raise ValueError(f"unknown model {model!r} (tiny or full)")
