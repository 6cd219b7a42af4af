"""SAM3 model runtime: loading, image inference and video sessions (pure Python, no Django).

Importing this package forces the Hugging Face hub offline: the server never downloads anything
at run time (weights, tokenizer, kernels), it only reads the configured local checkpoint.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from .loader import LoadedSam3, ModelLoadError, load_sam3
from .tiny import tiny_video_config, write_tiny_checkpoint
from .tokenizer import build_clip_tokenizer, write_small_bpe_file

__all__ = [
    "LoadedSam3",
    "ModelLoadError",
    "build_clip_tokenizer",
    "load_sam3",
    "tiny_video_config",
    "write_small_bpe_file",
    "write_tiny_checkpoint",
]
