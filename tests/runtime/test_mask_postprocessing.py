"""Video mask post-processing as Meta's SAM3 runs it (issue 18).

Our NMS and connected components against Meta's own CPU code (``sam3==0.1.4``'s ``sam3.perflib``,
unpacked by .ci/run beside the venv): identical outputs on random and crafted inputs. Then the
whole operations as transformers calls them with our kernel installed, against Meta's
``nms_masks`` / ``fill_holes_in_mask_scores``; and a tiny SAM3 whose detector finds one object
twice: one tracked object with ``meta``, two with ``off``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from inference.runtime.loader import LoadedSam3, load_sam3
from inference.runtime.mask_postprocessing import (
    connected_components,
    fill_interactive_holes,
    generic_nms,
    install_video_postprocessing,
)
from inference.runtime.tiny import write_tiny_checkpoint
from inference.runtime.video import ConceptVideoSession, set_temporal_disambiguation
from tests.conftest import require_meta_package


@pytest.fixture(scope="module")
def meta() -> ModuleType:
    """Meta's ``sam3`` package, imported from where .ci/run unpacks it."""
    package_dir = str(require_meta_package())
    sys.path.insert(0, package_dir)
    try:
        import sam3.model.sam3_tracker_utils
        import sam3.model.utils.sam1_utils
        import sam3.perflib.connected_components
        import sam3.perflib.nms
    finally:
        sys.path.remove(package_dir)
    return sam3


@pytest.fixture(autouse=True)
def _meta_postprocessing_afterwards() -> Iterator[None]:
    yield
    install_video_postprocessing("meta")  # the process-wide default every other test expects


def crafted_masks() -> list[torch.Tensor]:
    one_pixel = torch.zeros(1, 1, 5, 7, dtype=torch.bool)
    one_pixel[0, 0, 2, 3] = True
    touching = torch.zeros(1, 1, 6, 8, dtype=torch.bool)
    touching[0, 0, 0:2, 0:2] = True
    touching[0, 0, 2:4, 2:4] = True  # touches the first square at a corner: one component (8-connected)
    touching[0, 0, 0:2, 5:7] = True  # apart from both
    ring = torch.ones(1, 1, 7, 9, dtype=torch.bool)
    ring[0, 0, 2:5, 3:6] = False  # a hole: the background has two components
    stripes = torch.zeros(2, 1, 9, 11, dtype=torch.bool)
    stripes[0, 0, ::2] = True
    stripes[1, 0, :, ::2] = True
    return [
        one_pixel, touching, ring, stripes,
        torch.ones(3, 1, 4, 5, dtype=torch.bool), torch.zeros(2, 1, 3, 3, dtype=torch.bool),
        torch.ones(1, 1, 1, 1, dtype=torch.bool), torch.zeros(1, 1, 1, 13, dtype=torch.bool),
    ]


def test_connected_components_equal_metas_on_crafted_and_random_masks(meta) -> None:
    generator = np.random.default_rng(0)
    cases = crafted_masks()
    for _ in range(150):
        batch, height, width = (int(v) for v in generator.integers(1, [4, 60, 60]))
        cases.append(torch.from_numpy(generator.random((batch, 1, height, width)) < generator.random()))
    cases.append(torch.from_numpy(generator.random((3, 31, 17)) < 0.5))  # (B, H, W) is accepted too
    for masks in cases:
        want_labels, want_sizes = meta.perflib.connected_components.connected_components_cpu(masks)
        labels, sizes = connected_components(masks)
        assert labels.dtype == want_labels.dtype and torch.equal(labels, want_labels), tuple(masks.shape)
        assert sizes.dtype == want_sizes.dtype and torch.equal(sizes, want_sizes), tuple(masks.shape)
    touching_labels, touching_sizes = connected_components(cases[1])
    assert touching_labels.max() == 2 and touching_sizes[0, 0, 0, 0] == 8  # the corner-touching squares are one
    empty_labels, empty_sizes = connected_components(torch.zeros(0, 1, 8, 8, dtype=torch.bool))
    assert empty_labels.shape == empty_sizes.shape == (0, 1, 8, 8)


def test_nms_equals_metas_including_ties_and_edge_cases(meta) -> None:
    generator = np.random.default_rng(1)
    cases: list[tuple[torch.Tensor, torch.Tensor, float]] = [
        (torch.ones(1, 1), torch.tensor([0.3]), 0.1),
        (torch.ones(4, 4), torch.full((4,), 0.5), 0.1),  # identical detections, tied scores: one kept
        (torch.eye(5), torch.tensor([0.2, 0.9, 0.2, 0.9, 0.5]), 0.5),  # disjoint: all kept, ties in Meta's order
        (torch.full((3, 3), 0.1), torch.tensor([0.1, 0.3, 0.2]), 0.1),  # IoU equal to the threshold is kept
    ]
    for _ in range(400):
        n = int(generator.integers(1, 40))
        ious = torch.from_numpy(generator.random((n, n))).float()
        ious = (ious + ious.T) / 2
        ious.fill_diagonal_(1.0)
        tied = torch.from_numpy(generator.integers(0, 4, n) / 4).float()  # many ties
        cases.append((ious, tied if n % 2 else torch.rand(n), float(generator.random())))
    for ious, scores, threshold in cases:
        expected = meta.perflib.nms.generic_nms_cpu(ious, scores, threshold)
        kept = generic_nms(ious, scores, threshold)
        assert kept.dtype == torch.int64 and torch.equal(kept, expected), (ious.shape, threshold)
    assert generic_nms(torch.ones(4, 4), torch.full((4,), 0.5), 0.1).numel() == 1


def test_transformers_operations_with_our_kernel_equal_metas(meta) -> None:
    """transformers' nms_masks and fill_holes_in_mask_scores, run through our kernel, equal Meta's functions."""
    from transformers.models.sam3_video import modeling_sam3_video as transformers_video

    install_video_postprocessing("meta")
    generator = torch.Generator().manual_seed(2)
    for _ in range(20):
        n = int(torch.randint(1, 12, (1,), generator=generator))
        base = torch.randn(1, 40, 50, generator=generator)
        masks = base + 0.3 * torch.randn(n, 40, 50, generator=generator)  # overlapping detections of one thing
        probs = torch.rand(n, generator=generator)
        assert torch.equal(
            transformers_video.nms_masks(probs, masks, 0.2, 0.1), meta.perflib.nms.nms_masks(probs, masks, 0.2, 0.1)
        )
        scores = torch.randn(n, 1, 41, 57, generator=generator)  # odd sizes: padded to even ones
        for fill, sprinkles in ((True, True), (True, False), (False, True)):
            expected = meta.model.sam3_tracker_utils.fill_holes_in_mask_scores(scores, 16, fill, sprinkles)
            assert torch.equal(transformers_video.fill_holes_in_mask_scores(scores, 16, fill, sprinkles), expected)
            assert not torch.equal(expected, scores)  # it changed something: the check is not vacuous

    install_video_postprocessing("off")  # transformers without its kernel: nothing filled, nothing suppressed
    assert torch.equal(transformers_video.fill_holes_in_mask_scores(scores, 16), scores)
    assert transformers_video.nms_masks(probs, masks, 0.2, 0.1).sum() == (probs > 0.2).sum()


def test_interactive_hole_filling_equals_metas_image_predictor(meta) -> None:
    """Meta's click / box path (SAM2Transforms.postprocess_masks with SAM3InteractiveImagePredictor's
    defaults) == our filling + transformers' post_process_masks, as the image engine runs them."""
    from transformers.models.sam2.image_processing_sam2 import Sam2ImageProcessor

    transforms = meta.model.utils.sam1_utils.SAM2Transforms(resolution=1008, mask_threshold=0.0, max_hole_area=256.0)
    generator = torch.Generator().manual_seed(4)
    filled_any = False
    for _ in range(12):
        candidates = int(torch.randint(1, 4, (1,), generator=generator))
        logits = torch.randn(1, candidates, 36, 44, generator=generator) + 1.5  # mostly object, with holes of all sizes
        size = (int(torch.randint(40, 140, (1,), generator=generator)), int(torch.randint(40, 140, (1,), generator=generator)))
        expected = transforms.postprocess_masks(logits, size) > 0.0
        ours = Sam2ImageProcessor().post_process_masks(fill_interactive_holes(logits[None]), [list(size)])[0]  # per image
        assert torch.equal(ours, expected)
        filled_any |= not torch.equal(fill_interactive_holes(logits), logits)
    assert filled_any


@pytest.fixture(scope="module")
def twice_detecting_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-sam3"))


def detects_its_best_object_twice(loaded: LoadedSam3, frame: np.ndarray) -> None:
    """Copy the detector's best query over its worst one: two identical detections of one object,
    and a threshold between them and every other detection."""
    from inference.runtime import engine

    decoder = loaded.detector.detr_decoder
    inputs = loaded.processor(images=frame, text="dog", return_tensors="pt")
    with torch.inference_mode():
        per_query = loaded.detector(
            pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        ).pred_logits[0]
    best, worst = int(per_query.argmax()), int(per_query.argmin())
    with torch.no_grad():
        decoder.query_embed.weight[worst] = decoder.query_embed.weight[best]
        decoder.reference_points.weight[worst] = decoder.reference_points.weight[best]
    features = engine.compute_image_features(loaded, frame, include_tracker=False)
    found = engine.segment_concept(loaded, features, text="dog", threshold=0.0).scores
    assert torch.isclose(found[0], found[1]) and found[1] > found[2]  # the pair, then the rest
    loaded.model.score_threshold_detection = loaded.model.new_det_thresh = float((found[1] + found[2]) / 2)


@pytest.mark.parametrize(("mode", "tracked"), [("meta", 1), ("off", 2)])
def test_two_detections_of_one_object_are_tracked_once(twice_detecting_checkpoint: Path, mode: str, tracked: int) -> None:
    frames = [np.random.default_rng(3).integers(0, 255, (96, 128, 3), dtype=np.uint8)] * 3
    loaded = load_sam3(twice_detecting_checkpoint, None, "cpu", mask_postprocessing=mode)  # type: ignore[arg-type]
    detects_its_best_object_twice(loaded, frames[0])
    set_temporal_disambiguation(loaded, False)  # SAM3's hold-back would also drop the duplicate, a few frames later
    session = ConceptVideoSession(loaded, frames)
    session.add_text_prompt("dog")
    assert [len(instances.object_ids) for _, instances in session.propagate()] == [tracked] * 3
