"""The model inside a worker process: loaded once, its feature cache, and image jobs run on it.

Only the scheduler thread calls :meth:`ModelHost.run_image_jobs`; nothing here is thread-safe
beyond the cache, on purpose: one model, one stream of work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from loguru import logger
from PIL import Image

from inference.cache import FeatureCache
from inference.jobs import ConceptPrompt, ImageJob, InteractivePrompt
from inference.masks import encode_masks
from inference.metrics import BATCH_SIZE, CACHE_LOOKUPS, COMPUTE_SECONDS, POSTPROCESS_SECONDS, QUEUE_SECONDS
from inference.runtime.engine import (
    ImageFeatures,
    Instances,
    compute_image_features,
    compute_image_features_batch,
    segment_concept,
    segment_interactive,
    warmup,
)
from inference.runtime.loader import LoadedSam3, ModelLoadError, load_sam3
from inference.runtime.mask_postprocessing import MaskPostprocessing
from inference.runtime.tiny import write_tiny_checkpoint
from sam3site.errors import InvalidInput, ModelUnavailable

TINY_MODEL_WARNING = (
    "The tiny random-weight SAM3 is loaded: its masks are meaningless. Put real weights at SAM3_CHECKPOINT."
)


@dataclass
class HostSettings:
    checkpoint: Path
    bpe_path: Path | None
    device: str
    compile: bool = False
    resolution: int | None = None
    enabled: bool = True
    cache_bytes: int = 0
    cache_ttl_seconds: float = 600
    max_batch_size: int = 1
    tiny_fallback_dir: Path | None = None  # embedded quick start: write and use the tiny model when weights are missing
    conversion_cache_dir: Path | None = None  # where Meta's sam3.pt is converted to (once) and file hashes are kept
    mask_postprocessing: MaskPostprocessing = "meta"  # MASK_POSTPROCESSING


@dataclass
class ModelHost:
    settings: HostSettings
    loaded: LoadedSam3 | None = None
    state: str = "loading"  # loading | ready | failed | disabled
    reason: str | None = None
    cache: FeatureCache[ImageFeatures] = field(init=False)

    def __post_init__(self) -> None:
        self.cache = FeatureCache(
            max_bytes=self.settings.cache_bytes, ttl_seconds=self.settings.cache_ttl_seconds, size_of=lambda f: f.nbytes
        )

    # --- lifecycle ---

    def load(self) -> None:
        if not self.settings.enabled:
            self.state, self.reason = "disabled", "IMAGE_MODEL_ENABLED and VIDEO_MODEL_ENABLED are False"
            return
        checkpoint = self.settings.checkpoint
        bpe_path = self.settings.bpe_path
        fallback = self.settings.tiny_fallback_dir
        if fallback is not None and not checkpoint.exists():
            if not (fallback / "config.json").exists():
                write_tiny_checkpoint(fallback)
            checkpoint, bpe_path = fallback, None
        started = time.perf_counter()
        try:
            self.loaded = load_sam3(
                checkpoint, bpe_path, self.settings.device,
                compile=self.settings.compile, resolution=self.settings.resolution,
                cache_dir=self.settings.conversion_cache_dir, mask_postprocessing=self.settings.mask_postprocessing,
            )
            warmup(self.loaded)
        except ModelLoadError as error:
            self.state, self.reason = "failed", error.reason
            logger.error("Model not loaded: {}", error.reason)
            return
        except Exception as error:  # noqa: BLE001 - a worker must report, not die
            self.state, self.reason = "failed", f"{type(error).__name__}: {error}"
            logger.exception("Model not loaded")
            return
        self.state, self.reason = "ready", None
        logger.info("Model ready in {:.1f}s: {}", time.perf_counter() - started, self.identity)
        if self.loaded.is_tiny_random:
            logger.warning(TINY_MODEL_WARNING)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def identity(self) -> dict[str, Any]:
        if self.loaded is None:
            return {}
        identity = {key: self.loaded.identity[key] for key in ("name", "parameters", "dtype", "device", "resolution", "tiny_random")}
        # Enough of the weights' sha256 to tell checkpoints apart (Meta's sam3.pt for a converted one).
        identity["checkpoint_sha256"] = self.loaded.checkpoint_sha256[:12]
        if self.loaded.is_tiny_random:
            identity["warning"] = TINY_MODEL_WARNING
        return identity

    def require_ready(self) -> LoadedSam3:
        if not self.ready or self.loaded is None:
            raise ModelUnavailable(f"The model is {self.state}: {self.reason or 'loading'}", detail={"state": self.state})
        return self.loaded

    # --- image jobs ---

    def run_image_jobs(self, jobs: list[ImageJob]) -> list[dict[str, Any] | Exception]:
        """Run jobs that arrived together: one backbone pass for the uncached images, then each job's prompts."""
        loaded = self.require_ready()
        started = time.time()
        for job in jobs:
            QUEUE_SECONDS.observe(max(0.0, started - job.enqueued_at))
        features = self._features_for(loaded, jobs)
        results: list[dict[str, Any] | Exception] = []
        for job in jobs:
            try:
                job_features, cache_hit, backbone_seconds = features[job.image_sha256]
                if isinstance(job_features, Exception):
                    raise job_features
                results.append(self._run_prompts(loaded, job, job_features, cache_hit, backbone_seconds, started))
            except Exception as error:  # noqa: BLE001 - one bad job must not fail the others
                results.append(error)
        return results

    def _features_for(
        self, loaded: LoadedSam3, jobs: list[ImageJob]
    ) -> dict[str, tuple[ImageFeatures | Exception, bool, float]]:
        """Per image hash: (features or the error loading the image, cache hit, backbone seconds per image)."""
        features: dict[str, tuple[ImageFeatures | Exception, bool, float]] = {}
        missing: dict[str, ImageJob] = {}
        for job in jobs:
            if job.image_sha256 in features or job.image_sha256 in missing:
                continue
            cached = self.cache.get(job.image_sha256) if self.cache.max_bytes else None
            CACHE_LOOKUPS.labels(result="hit" if cached is not None else "miss").inc()
            if cached is not None:
                features[job.image_sha256] = (cached, True, 0.0)
            else:
                missing[job.image_sha256] = job
        images: dict[str, np.ndarray] = {}
        for sha, job in missing.items():
            try:
                images[sha] = load_rgb(Path(job.image_path))
            except Exception as error:  # noqa: BLE001
                features[sha] = (error, False, 0.0)
        if images:
            BATCH_SIZE.observe(len(images))
            started = time.perf_counter()
            if len(images) == 1:
                computed = [compute_image_features(loaded, next(iter(images.values())))]
            else:
                computed = compute_image_features_batch(loaded, list(images.values()))
            per_image = (time.perf_counter() - started) / len(images)
            for sha, image_features in zip(images, computed, strict=True):
                if self.cache.max_bytes:
                    self.cache.put(sha, image_features)
                features[sha] = (image_features, False, per_image)
        return features

    def _run_prompts(
        self, loaded: LoadedSam3, job: ImageJob, features: ImageFeatures, cache_hit: bool, backbone_seconds: float, started: float
    ) -> dict[str, Any]:
        compute_seconds = backbone_seconds
        postprocess_seconds = 0.0
        prompt_results = []
        for prompt in job.prompts:
            began = time.perf_counter()
            instances = self._segment(loaded, features, prompt, job)
            if job.max_instances is not None and len(instances) > job.max_instances:
                instances = Instances(
                    scores=instances.scores[: job.max_instances],
                    boxes=instances.boxes[: job.max_instances],
                    masks=instances.masks[: job.max_instances],
                    object_score=instances.object_score,
                )
            computed = time.perf_counter()
            masks = encode_masks(instances.masks, job.mask_format)
            finished = time.perf_counter()
            compute_seconds += computed - began
            postprocess_seconds += finished - computed
            prompt_results.append(
                {
                    "prompt": prompt_summary(prompt),
                    "instances": [
                        {"score": round(float(score), 6), "box": [round(float(v), 2) for v in box], "mask": mask}
                        for score, box, mask in zip(instances.scores.tolist(), instances.boxes.tolist(), masks, strict=True)
                    ],
                    **({"object_score": round(instances.object_score, 6)} if instances.object_score is not None else {}),
                }
            )
        COMPUTE_SECONDS.observe(compute_seconds)
        POSTPROCESS_SECONDS.observe(postprocess_seconds)
        height, width = features.original_size
        return {
            "image": {"sha256": job.image_sha256, "width": width, "height": height},
            "results": prompt_results,
            "model": self.identity,
            "cache_hit": cache_hit,
            "timings_ms": {
                "queued": round(max(0.0, started - job.enqueued_at) * 1000, 2),
                "compute": round(compute_seconds * 1000, 2),
                "postprocess": round(postprocess_seconds * 1000, 2),
            },
        }

    @staticmethod
    def _segment(loaded: LoadedSam3, features: ImageFeatures, prompt: ConceptPrompt | InteractivePrompt, job: ImageJob) -> Instances:
        try:
            if isinstance(prompt, InteractivePrompt):
                return segment_interactive(
                    loaded, features, points=prompt.points or None, point_labels=prompt.point_labels or None,
                    box=prompt.box, multimask=prompt.multimask,
                )
            return segment_concept(
                loaded, features, text=prompt.text, boxes=prompt.boxes or None, box_labels=prompt.box_labels or None,
                threshold=job.threshold, mask_threshold=job.mask_threshold,
            )
        except ValueError as error:  # the engine's own prompt checks (some carry their own code)
            raise InvalidInput(str(error), code=getattr(error, "code", "invalid_prompt")) from None


def prompt_summary(prompt: ConceptPrompt | InteractivePrompt) -> dict[str, Any]:
    if isinstance(prompt, InteractivePrompt):
        return {"kind": "interactive", "points": prompt.points, "point_labels": prompt.point_labels, "box": prompt.box}
    return {"kind": "concept", "text": prompt.text, "boxes": prompt.boxes, "box_labels": prompt.box_labels}


def load_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.array(image.convert("RGB"))  # writable: torch warns on read-only arrays
    except (SyntaxError, ValueError, OSError) as error:  # inline images are decoded here first
        if isinstance(error, FileNotFoundError):
            raise
        raise InvalidInput(f"The image is truncated or corrupt: {error}", code="corrupt_file") from None
