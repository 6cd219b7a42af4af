"""Load the configured SAM3 once and report what it is, with a one-image self-test."""

from __future__ import annotations

import json
import time
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from inference.runtime import engine
from inference.runtime.checkpoints import conversion_cache_dir
from inference.runtime.loader import LoadedSam3, ModelLoadError, load_sam3


def self_test_image(width: int = 640, height: int = 480) -> np.ndarray:
    """A deterministic RGB picture (gradient, two boxes): exercises every path, means nothing."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[..., 1] = np.linspace(255, 0, height, dtype=np.uint8)[:, None]
    image[height // 5 : height // 2, width // 5 : width // 2] = (220, 40, 40)
    image[height // 2 : 4 * height // 5, width // 2 : 4 * width // 5] = (30, 30, 200)
    return image


class Command(BaseCommand):
    help = (
        "Load SAM3 as the server would (SAM3_CHECKPOINT, SAM3_BPE_PATH, IMAGE_MODEL_DEVICE, converting Meta's"
        " sam3.pt once if needed) and print the resolved checkpoint, its sha256, parameter count, dtype, device and"
        " resolution, then run one image through the backbone, a text prompt and a click, with timings."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--checkpoint", type=Path, help="instead of SAM3_CHECKPOINT")
        parser.add_argument("--device", help="instead of IMAGE_MODEL_DEVICE (cpu, cuda:N)")
        parser.add_argument("--no-self-test", action="store_true", help="only load and describe the model")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args: Any, **options: Any) -> None:
        config = settings.CONFIG
        explicit_resolution = "image_model_resolution" in config.model_fields_set
        started = time.perf_counter()
        try:
            loaded = load_sam3(
                options["checkpoint"] or config.sam3_checkpoint, config.sam3_bpe_path,
                options["device"] or config.image_model_device,
                resolution=config.image_model_resolution if explicit_resolution else None,
                cache_dir=conversion_cache_dir(config.data_dir),
            )
        except ModelLoadError as error:
            raise CommandError(f"the model does not load: {error.reason}") from None
        info: dict[str, Any] = {
            **{k: loaded.identity[k] for k in ("checkpoint", "format", "path", "sha256", "parameters", "dtype", "device",
                                               "resolution", "tokenizer", "tiny_random", "torch", "transformers")},
            "load_seconds": round(time.perf_counter() - started, 2),
        }
        if not options["no_self_test"]:
            info["self_test"] = self_test(loaded, threshold=config.image_model_confidence_threshold)
        if options["json"]:
            self.stdout.write(json.dumps(info, indent=2))
            return
        for key, value in info.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            self.stdout.write(f"{key:>14}: {value}")


def self_test(loaded: LoadedSam3, *, threshold: float) -> dict[str, Any]:
    """Backbone, a text prompt and a click on ``self_test_image``, timed in milliseconds."""
    image = self_test_image()
    height, width = image.shape[:2]
    timings: dict[str, Any] = {}

    began = time.perf_counter()
    features = engine.compute_image_features(loaded, image)
    timings["backbone_ms"] = round((time.perf_counter() - began) * 1000, 1)
    began = time.perf_counter()
    concept = engine.segment_concept(loaded, features, text="red box", threshold=threshold)
    timings["text_prompt_ms"] = round((time.perf_counter() - began) * 1000, 1)
    began = time.perf_counter()
    click = engine.segment_interactive(loaded, features, points=[(width * 0.35, height * 0.35)])
    timings["click_ms"] = round((time.perf_counter() - began) * 1000, 1)
    if tuple(click.masks.shape[-2:]) != (height, width):
        raise CommandError(f"self-test failed: the click's mask is {tuple(click.masks.shape)}, not {height}x{width}")
    return {**timings, "text_instances": len(concept), "click_score": round(float(click.scores[0]), 4)}
