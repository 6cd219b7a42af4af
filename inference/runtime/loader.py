"""Load one SAM3 (``Sam3VideoModel``) from a local checkpoint: Hugging Face layout or Meta's ``sam3.pt``.

One ``Sam3VideoModel`` serves everything: its ``detector_model`` (a ``Sam3Model``) answers text /
exemplar-box prompts, its ``tracker_model`` (SAM2-style, no vision encoder of its own) answers
point / box clicks and video tracking, both reading the single ViT backbone. Loading
``Sam3Model`` and ``Sam3TrackerModel`` side by side would hold and run that backbone twice.

``SAM3_CHECKPOINT`` may name a Hugging Face-layout directory (``config.json`` + ``model.safetensors``),
a file inside one, or Meta's ``sam3.pt`` alone; the latter is converted once into the Hugging Face
layout under the conversion cache (``checkpoints.cached_conversion``) and loaded from there.

Nothing here touches the network: every ``from_pretrained`` is ``local_files_only`` and the hub is
forced offline. Every failure a user can cause (wrong path, missing/corrupt weights, wrong config,
wrong BPE file, unavailable device) surfaces as ``ModelLoadError`` with a readable reason.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from .checkpoints import CheckpointError, cached_conversion, file_sha256, read_manifest, sniff
from .tiny import BPE_FILENAME, TINY_MARKER_FILE

if TYPE_CHECKING:
    import torch
    from transformers import (
        CLIPTextConfig,
        CLIPTokenizer,
        Sam3Config,
        Sam3Model,
        Sam3Processor,
        Sam3TrackerProcessor,
        Sam3VideoConfig,
        Sam3VideoModel,
        Sam3VideoProcessor,
        Sam3VisionConfig,
        Sam3ViTConfig,
    )
    from transformers.modeling_outputs import BaseModelOutputWithPooling
    from transformers.models.sam3_tracker_video.modeling_sam3_tracker_video import Sam3TrackerVideoModel

    from .mask_postprocessing import MaskPostprocessing

# transformers reads this when it is imported; set it before the first import anywhere here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

EXPECTED_MODEL_TYPE = "sam3_video"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class ModelLoadError(RuntimeError):
    """The checkpoint cannot be loaded; ``reason`` says why in one human-readable sentence."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class LoadedSam3:
    model: Sam3VideoModel  # eval mode, on `device`
    processor: Sam3Processor  # image preprocessing + text/box prompts + instance post-processing
    tracker_processor: Sam3TrackerProcessor  # point/box prompts + mask post-processing
    video_processor: Sam3VideoProcessor  # video sessions
    tokenizer: CLIPTokenizer  # fast
    device: torch.device
    dtype: torch.dtype  # of the weights
    resolution: int  # square model input size in pixels (1008 for the published model)
    checkpoint_dir: Path
    is_tiny_random: bool
    checkpoint_sha256: str = ""  # of the weights file (Meta's sam3.pt for a converted checkpoint)
    identity: dict[str, Any] = field(default_factory=dict)
    # text prompt -> projected CLIP features (what Sam3Model.forward uses of get_text_features);
    # bounded LRU, a few tens of KB per entry on the model device.
    text_cache: OrderedDict[str, BaseModelOutputWithPooling] = field(default_factory=OrderedDict, repr=False)
    text_cache_size: int = 128
    mask_postprocessing: MaskPostprocessing = "meta"  # see mask_postprocessing

    @property
    def detector(self) -> Sam3Model:
        return self.model.detector_model

    @property
    def tracker(self) -> Sam3TrackerVideoModel:
        return self.model.tracker_model


def build_processors(
    tokenizer: CLIPTokenizer, image_size: int
) -> tuple[Sam3Processor, Sam3TrackerProcessor, Sam3VideoProcessor]:
    """(Sam3Processor, Sam3TrackerProcessor, Sam3VideoProcessor) for ``image_size``.

    Built from SAM3's published preprocessing constants rather than read from the checkpoint's
    processor files, so a checkpoint saved by any transformers version (or with no processor
    files at all) preprocesses the same: square resize without keeping the aspect ratio,
    bilinear, rescale 1/255, mean = std = 0.5. The video processor class defaults to SAM2's
    ImageNet statistics, hence the explicit mean/std.
    """
    from transformers import Sam3ImageProcessor, Sam3Processor, Sam3TrackerProcessor, Sam3VideoProcessor
    from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

    size = {"height": image_size, "width": image_size}
    image_processor = Sam3ImageProcessor(size=size)
    video_processor = Sam2VideoVideoProcessor(size=size, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return (
        Sam3Processor(image_processor=image_processor, tokenizer=tokenizer),
        Sam3TrackerProcessor(image_processor=image_processor),
        Sam3VideoProcessor(image_processor=image_processor, video_processor=video_processor, tokenizer=tokenizer),
    )


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report / progress bars; failures are reported by us instead."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(previous)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]


SUPPORTED_LAYOUTS = (
    "a Hugging Face-layout directory of the facebook/sam3 release (config.json + model.safetensors),"
    " a file inside one, or Meta's sam3.pt alone"
)


@dataclass(frozen=True)
class ResolvedCheckpoint:
    directory: Path  # Hugging Face layout, loaded by from_pretrained
    sha256: str  # of the weights the operator supplied
    source: Path  # what SAM3_CHECKPOINT named
    converted_from: str | None = None  # the Meta file's name when ``directory`` is our conversion of it


def _has_weights(directory: Path) -> bool:
    return (directory / "config.json").is_file() and any((directory / name).is_file() for name in WEIGHT_FILES)


def resolve_checkpoint_dir(checkpoint: Path | str) -> Path:
    """The Hugging Face-layout directory for ``checkpoint`` (a directory or a file inside one)."""
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        directory = path
    elif path.exists() or (path.suffix and (path.parent / "config.json").is_file()):
        directory = path.parent
    else:
        raise ModelLoadError(f"checkpoint not found: {path} (expected {SUPPORTED_LAYOUTS})")
    if not (directory / "config.json").is_file():
        raise ModelLoadError(f"no config.json in checkpoint directory {directory} (expected {SUPPORTED_LAYOUTS})")
    return directory


def resolve_checkpoint(checkpoint: Path | str, cache_dir: Path | None) -> ResolvedCheckpoint:
    """Where to load ``checkpoint`` from, converting Meta's ``sam3.pt`` into ``cache_dir`` first if needed.

    A file with a complete Hugging Face layout beside it (the facebook/sam3 download holds both
    ``sam3.pt`` and ``model.safetensors``) loads those files; a PyTorch file without one is
    taken as Meta's checkpoint and converted once (keyed by its sha256, reused afterwards).
    """
    path = Path(checkpoint).expanduser()
    if path.is_file() and not _has_weights(path.parent):
        kind = sniff(path)
        if kind == "torch":
            return _converted(path, cache_dir)
        if not (path.parent / "config.json").is_file():
            found = "a safetensors file without config.json" if kind == "safetensors" else "not a PyTorch checkpoint"
            raise ModelLoadError(f"{path} is not a SAM3 checkpoint ({found}); supported: {SUPPORTED_LAYOUTS}")
    directory = resolve_checkpoint_dir(path)
    manifest = read_manifest(directory)
    if manifest and isinstance(manifest.get("sha256"), str):  # a directory we converted earlier
        return ResolvedCheckpoint(directory, manifest["sha256"], path, str(manifest.get("source_name") or ""))
    return ResolvedCheckpoint(directory, _weights_sha256(directory, cache_dir), path)


def _converted(path: Path, cache_dir: Path | None) -> ResolvedCheckpoint:
    if cache_dir is None:
        raise ModelLoadError(f"{path} is in Meta's format and needs converting, but no conversion cache directory is set")
    try:
        directory, digest = cached_conversion(path, cache_dir)
    except CheckpointError as exc:
        raise ModelLoadError(str(exc)) from exc
    except OSError as exc:
        raise ModelLoadError(f"cannot convert {path} into {cache_dir}: {_first_line(exc)}") from exc
    return ResolvedCheckpoint(directory, digest, path, path.name)


def _weights_sha256(directory: Path, cache_dir: Path | None) -> str:
    """sha256 of the weights file; of the shards' sha256s in order for a sharded checkpoint."""
    import hashlib

    index = directory / "model.safetensors.index.json"
    single = next((directory / n for n in WEIGHT_FILES if n != index.name and (directory / n).is_file()), None)
    try:
        if single is not None:
            return file_sha256(single, cache_dir)
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            joined = "".join(file_sha256(directory / shard, cache_dir) for shard in shards)
            return hashlib.sha256(joined.encode()).hexdigest()
    except (OSError, ValueError, KeyError, TypeError):
        return ""  # the weights load then reports what is wrong with them
    return ""


def _read_config(directory: Path, resolution: int | None) -> Sam3VideoConfig:
    from transformers import Sam3VideoConfig

    config_path = directory / "config.json"
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{config_path} is not valid JSON: {_first_line(exc)}") from exc
    model_type = raw.get("model_type") if isinstance(raw, dict) else None
    if model_type != EXPECTED_MODEL_TYPE:
        extra = (
            " (an image-only SAM3 conversion; the server needs the full release with the tracker)"
            if model_type == "sam3"
            else ""
        )
        raise ModelLoadError(
            f"{config_path} has model_type {model_type!r}{extra}; expected {EXPECTED_MODEL_TYPE!r} (facebook/sam3)"
        )
    try:
        config = Sam3VideoConfig.from_pretrained(directory, local_files_only=True)
    except Exception as exc:  # strict config validation raises several exception types
        raise ModelLoadError(f"{config_path} is not a valid SAM3 configuration: {_first_line(exc)}") from exc

    vision = cast("Sam3VisionConfig", _detector_config(config).vision_config)
    patch = cast(int, cast("Sam3ViTConfig", vision.backbone_config).patch_size)  # typed int | pair; SAM3's is an int
    if resolution is not None and resolution != config.image_size:
        if not isinstance(resolution, int) or resolution < 4 * patch or resolution % patch:
            raise ModelLoadError(
                f"resolution {resolution!r} is not supported: it must be a multiple of the patch size {patch}"
                f" and at least {4 * patch} (the published model uses 1008)"
            )
        # The setter propagates to the detector, tracker, feature-map sizes and memory RoPE grid.
        config.image_size = resolution
        config.low_res_mask_size = 4 * resolution // patch
    return config


def _detector_config(config: Sam3VideoConfig) -> Sam3Config:
    # The __init__s always build config objects; transformers types sub-config attributes as their raw input.
    return cast("Sam3Config", config.detector_config)


def detector_text_config(config: Sam3VideoConfig) -> CLIPTextConfig:
    """The detector's CLIP text encoder configuration."""
    return cast("CLIPTextConfig", _detector_config(config).text_config)


def _resolve_device(device: str) -> torch.device:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ModelLoadError(f"invalid device {device!r}: {_first_line(exc)}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {device!r} requested but CUDA is not available on this machine")
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
        dev = torch.device("cuda", index)
    elif dev.type != "cpu":
        raise ModelLoadError(f"device {device!r} is not supported (use cpu or cuda[:N])")
    return dev


def _resolve_dtype(dev: torch.device, half: bool | None) -> torch.dtype:
    """float32 on CPU; on CUDA bfloat16 unless ``half is False`` or the GPU lacks bf16.

    bfloat16 is what Meta runs SAM3 in (autocast) and keeps float32's exponent range, so large
    attention logits stay finite. float16 is never chosen: its range is what breaks results,
    so pre-Ampere GPUs stay in float32.
    """
    import torch

    if dev.type != "cuda" or half is False:
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float32


def _load_tokenizer(bpe_path: Path | None, directory: Path) -> tuple[CLIPTokenizer, str]:
    from .tokenizer import BpeFileError, build_clip_tokenizer

    candidates = [Path(bpe_path).expanduser()] if bpe_path else []
    candidates.append(directory / BPE_FILENAME)
    for candidate in candidates:
        if candidate.is_file():
            try:
                return build_clip_tokenizer(candidate), str(candidate)
            except BpeFileError as exc:
                raise ModelLoadError(str(exc)) from exc
    if (directory / "tokenizer.json").is_file() or (directory / "vocab.json").is_file():
        from transformers import CLIPTokenizer

        try:
            return CLIPTokenizer.from_pretrained(directory, local_files_only=True), str(directory)
        except Exception as exc:
            raise ModelLoadError(f"cannot load the tokenizer files in {directory}: {_first_line(exc)}") from exc
    looked = ", ".join(str(c) for c in candidates)
    raise ModelLoadError(
        f"no CLIP tokenizer: none of {looked} exists and {directory} has no tokenizer.json/vocab.json"
        " (set SAM3_BPE_PATH to bpe_simple_vocab_16e6.txt.gz)"
    )


def _load_weights(directory: Path, config: Sam3VideoConfig, dtype: torch.dtype) -> Sam3VideoModel:
    from transformers import Sam3VideoModel

    weights = [directory / name for name in WEIGHT_FILES if (directory / name).is_file()]
    if not weights:
        raise ModelLoadError(f"no weights in {directory}: expected model.safetensors (Hugging Face layout)")
    try:
        with _quiet_transformers():
            # output_loading_info=True returns (model, info); transformers types the result as the model alone.
            model, info = cast(
                "tuple[Sam3VideoModel, dict[str, list[Any]]]",
                Sam3VideoModel.from_pretrained(
                    directory, config=config, dtype=dtype, local_files_only=True, output_loading_info=True
                ),
            )
    except Exception as exc:  # safetensors / torch / transformers raise many types for bad files
        raise ModelLoadError(f"cannot load weights from {weights[0]}: {_first_line(exc)}") from exc

    problems = []
    for kind in ("missing_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(kind) or [])
        if keys:
            problems.append(f"{len(keys)} {kind.replace('_', ' ')} (e.g. {keys[0]})")
    if info.get("error_msgs"):
        problems.append(_first_line(Exception(info["error_msgs"][0])))
    if problems:
        raise ModelLoadError(f"weights in {weights[0]} do not match config.json: " + "; ".join(problems))
    return model


def load_sam3(
    checkpoint: Path | str,
    bpe_path: Path | str | None,
    device: str,
    *,
    compile: bool = False,
    resolution: int | None = None,
    half: bool | None = None,
    cache_dir: Path | None = None,
    mask_postprocessing: MaskPostprocessing = "meta",
) -> LoadedSam3:
    """Load SAM3 for inference on ``device``.

    ``checkpoint`` is a Hugging Face-layout directory, any file inside one, or Meta's ``sam3.pt``
    alone, which is converted once into ``cache_dir`` (by its sha256) and loaded from there;
    ``cache_dir`` also remembers file hashes so a restart does not rehash the weights.
    The tokenizer comes from ``bpe_path`` if that file exists, else from the checkpoint directory
    (its BPE file or tokenizer files). ``half``: None or True = bfloat16 on CUDA GPUs that
    support it, float32 elsewhere (half precision is never used on CPU, where it is slow, nor as
    float16, whose range breaks results); False = float32 everywhere. ``compile`` wraps the vision encoder in ``torch.compile`` (the
    first call per batch size then compiles). ``resolution`` overrides the 1008 px input size.
    ``mask_postprocessing``: ``meta`` runs the detection NMS and hole filling Meta's SAM3 runs on
    video masks (``mask_postprocessing``), ``off`` skips them as transformers does without its hub kernel.
    """
    import torch

    from .mask_postprocessing import install_video_postprocessing

    install_video_postprocessing(mask_postprocessing)
    resolved = resolve_checkpoint(checkpoint, cache_dir)
    directory = resolved.directory
    config = _read_config(directory, resolution)
    dev = _resolve_device(device)
    dtype = _resolve_dtype(dev, half)
    tokenizer, tokenizer_source = _load_tokenizer(Path(bpe_path) if bpe_path else None, directory)

    text_vocab = detector_text_config(config).vocab_size
    if len(tokenizer) > text_vocab:
        raise ModelLoadError(
            f"the tokenizer from {tokenizer_source} has {len(tokenizer)} tokens but the model's text encoder"
            f" knows {text_vocab}: the BPE file does not belong to this checkpoint"
        )

    model = _load_weights(directory, config, dtype)
    try:
        # functools.wraps(Module.to) makes mypy see the unbound signature (self first).
        model = model.to(dev).eval()  # type: ignore[arg-type]
    except RuntimeError as exc:  # e.g. CUDA out of memory
        raise ModelLoadError(f"cannot move the model to {dev}: {_first_line(exc)}") from exc
    if compile:
        # The ViT + FPN neck is >95% of the image FLOPs and sees one fixed input size.
        model.detector_model.vision_encoder.compile(dynamic=False)

    image_size = int(config.image_size)
    processor, tracker_processor, video_processor = build_processors(tokenizer, image_size)
    is_tiny = (directory / TINY_MARKER_FILE).is_file()
    parameters = sum(p.numel() for p in model.parameters())
    identity = {
        "name": "sam3-tiny-random" if is_tiny else resolved.converted_from or directory.name,
        "path": str(directory),
        "checkpoint": str(resolved.source),
        "format": "meta (converted)" if resolved.converted_from else "huggingface",
        "sha256": resolved.sha256,
        "parameters": parameters,
        "dtype": str(dtype).removeprefix("torch."),
        "device": str(dev),
        "resolution": image_size,
        "tiny_random": is_tiny,
        "compiled": bool(compile),
        "mask_postprocessing": mask_postprocessing,
        "tokenizer": tokenizer_source,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }
    return LoadedSam3(
        model=model,
        processor=processor,
        tracker_processor=tracker_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        device=dev,
        dtype=dtype,
        resolution=image_size,
        checkpoint_dir=directory,
        is_tiny_random=is_tiny,
        checkpoint_sha256=resolved.sha256,
        identity=identity,
        mask_postprocessing=mask_postprocessing,
    )
