"""A tiny, randomly initialised SAM3 of the real architecture, for tests and model-less setups.

Same classes and code paths as the published ``facebook/sam3`` (``Sam3VideoModel``: detector +
tracker sharing one ViT), only with small sizes: ViT hidden 64 x 2 layers at 224 px / patch 14,
FPN / DETR / mask / tracker hidden 128 (smaller breaks video tracking, see ``_TINY_HIDDEN``),
CLIP text hidden 32, 20 queries, backbone feature maps 64/32/16, memory RoPE grid 16. About 5 M
parameters; builds in ~0.1 s, runs an image prompt in a few tens of ms on CPU. With random
weights scores sit near 0.5 * 0.5 = 0.25, so callers must lower thresholds to see detections.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .tokenizer import (
    BOS_TOKEN,
    EOS_TOKEN,
    bpe_vocab_size,
    build_clip_tokenizer,
    clip_vocab_from_merges,
    small_bpe_merges,
    write_small_bpe_file,
)

if TYPE_CHECKING:
    from transformers import Sam3VideoConfig, Sam3VideoModel

TINY_MARKER_FILE = "TINY_RANDOM_MODEL"
BPE_FILENAME = "bpe_simple_vocab_16e6.txt.gz"
WEIGHTS_FILE = "model.safetensors"

TINY_IMAGE_SIZE = 224
TINY_PATCH_SIZE = 14
# FPN / DETR / mask decoder / tracker width. The tracker's memory attention hard-codes 64-channel
# memories (kv_in_dim=64) and splits each object pointer into width/64 tokens; at width 64 the
# split is skipped and transformers 5.23 then concatenates a 4-D pointer with 3-D memories
# (crash on the second tracked frame). 128 is the smallest width that tracks.
_TINY_HIDDEN = 128


def _default_small_vocab_size() -> int:
    return len(clip_vocab_from_merges(small_bpe_merges()))


def tiny_video_config(vocab_size: int | None = None) -> Sam3VideoConfig:
    """The tiny ``Sam3VideoConfig`` (random-weight test model of the SAM3 architecture).

    ``vocab_size`` must cover the tokenizer used with it; by default it is exactly the size of
    the small BPE vocabulary ``write_small_bpe_file`` writes (its last two ids are BOS/EOS).
    """
    from transformers import (
        CLIPTextConfig,
        Sam3Config,
        Sam3DETRDecoderConfig,
        Sam3DETREncoderConfig,
        Sam3GeometryEncoderConfig,
        Sam3MaskDecoderConfig,
        Sam3TrackerVideoConfig,
        Sam3TrackerVideoMaskDecoderConfig,
        Sam3TrackerVideoPromptEncoderConfig,
        Sam3VideoConfig,
        Sam3VisionConfig,
        Sam3ViTConfig,
    )

    vocab_size = vocab_size or _default_small_vocab_size()
    grid = TINY_IMAGE_SIZE // TINY_PATCH_SIZE  # 16 patches per side
    feature_sizes = [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]

    def vision_config() -> Sam3VisionConfig:
        # window 8 tiles the 16x16 grid exactly; the last of the 2 layers is global like SAM3's.
        vit = Sam3ViTConfig(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=TINY_IMAGE_SIZE,
            patch_size=TINY_PATCH_SIZE,
            window_size=8,
            global_attn_indexes=[1],
        )
        return Sam3VisionConfig(backbone_config=vit, fpn_hidden_size=_TINY_HIDDEN, backbone_feature_sizes=feature_sizes)

    text = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=32,  # the SAM3 processor pads prompts to 32 tokens
        hidden_act="gelu",
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    detector = Sam3Config(
        vision_config=vision_config(),
        text_config=text,
        geometry_encoder_config=Sam3GeometryEncoderConfig(
            hidden_size=_TINY_HIDDEN, num_layers=1, num_attention_heads=2, intermediate_size=64
        ),
        detr_encoder_config=Sam3DETREncoderConfig(
            hidden_size=_TINY_HIDDEN, num_layers=1, num_attention_heads=2, intermediate_size=64
        ),
        detr_decoder_config=Sam3DETRDecoderConfig(
            hidden_size=_TINY_HIDDEN, num_layers=2, num_queries=20, num_attention_heads=2, intermediate_size=64
        ),
        mask_decoder_config=Sam3MaskDecoderConfig(hidden_size=_TINY_HIDDEN, num_attention_heads=2),
    )
    # image_size is a property the config's __init__ pops from **kwargs; its typed signature omits it.
    tracker = Sam3TrackerVideoConfig(  # type: ignore[call-arg]
        # The tracker reads the detector's backbone through tracker_neck, so its vision config is
        # the detector's; Sam3TrackerModel.from_pretrained relies on that when it maps weights.
        vision_config=vision_config(),
        prompt_encoder_config=Sam3TrackerVideoPromptEncoderConfig(
            hidden_size=_TINY_HIDDEN, image_size=TINY_IMAGE_SIZE, patch_size=TINY_PATCH_SIZE
        ),
        mask_decoder_config=Sam3TrackerVideoMaskDecoderConfig(
            hidden_size=_TINY_HIDDEN, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=_TINY_HIDDEN
        ),
        memory_attention_hidden_size=_TINY_HIDDEN,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=64,
        memory_attention_rope_feat_sizes=[grid, grid],
        memory_encoder_hidden_size=_TINY_HIDDEN,
        memory_encoder_output_channels=64,  # must be 64 (see _TINY_HIDDEN)
        mask_downsampler_embed_dim=_TINY_HIDDEN,
        memory_fuser_embed_dim=_TINY_HIDDEN,
        memory_fuser_intermediate_dim=64,
        image_size=TINY_IMAGE_SIZE,  # the setter derives feature sizes and the RoPE grid (16)
    )
    return Sam3VideoConfig(
        detector_config=detector,
        tracker_config=tracker,
        low_res_mask_size=4 * grid,
    )


def build_tiny_model(seed: int = 0, vocab_size: int | None = None) -> Sam3VideoModel:
    """The tiny ``Sam3VideoModel`` with deterministic random weights (global RNG untouched)."""
    import torch
    from transformers import Sam3VideoModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Sam3VideoModel(tiny_video_config(vocab_size))
    return model.eval()


def write_tiny_checkpoint(directory: Path, seed: int = 0) -> Path:
    """Write the tiny random SAM3 in the published Hugging Face layout; returns ``directory``.

    Files: ``config.json`` + ``model.safetensors`` (state_dict names, like the facebook/sam3
    release), the processor and tokenizer files (``Sam3VideoProcessor.save_pretrained``), the small BPE file
    ``bpe_simple_vocab_16e6.txt.gz`` the tokenizer came from, and the ``TINY_RANDOM_MODEL`` marker
    the loader uses to flag the model as not a real one.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bpe_path = write_small_bpe_file(directory / BPE_FILENAME)
    tokenizer = build_clip_tokenizer(bpe_path)
    vocab_size = bpe_vocab_size(bpe_path)

    model = build_tiny_model(seed, vocab_size)
    model.config.save_pretrained(directory)
    # Not model.save_pretrained: transformers 5.x reverse-applies the sam3_tracker key renaming
    # on save and writes "tracker_model.tracker_model.*"; the published checkpoint (and what
    # Sam3TrackerModel.from_pretrained expects) has plain state_dict names.
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})

    from .loader import build_processors

    _, _, video_processor = build_processors(tokenizer, TINY_IMAGE_SIZE)
    video_processor.save_pretrained(directory)

    marker = {
        "description": "tiny SAM3 (Sam3VideoModel) with random weights; for tests, not for real use",
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
    }
    (directory / TINY_MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
    return directory
