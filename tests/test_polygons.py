"""The `polygons` mask format: every component with its holes, along pixel edges, fills back to the mask.

Filling uses pycocotools (COCO's own polygon rasteriser, which reads vertices as pixel corners):
one RLE per ring, combined with XOR, i.e. the even-odd rule the README documents.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from inference.masks import decode_rle, encode_masks, encode_polygons, encode_rle


def fill(components: list, height: int, width: int) -> np.ndarray:
    """The mask the polygons describe, by the even-odd rule over all rings."""
    filled = np.zeros((height, width), dtype=bool)
    for component in components:
        for ring in component:
            assert len(ring) >= 8 and len(ring) % 2 == 0  # >= 4 vertices; 4 numbers would read as a bbox
            (rle,) = coco_mask.frPyObjects([ring], height, width)
            filled ^= coco_mask.decode(rle).astype(bool)
    return filled


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def signed_area(ring: list[int]) -> float:
    x, y = np.array(ring[0::2], dtype=float), np.array(ring[1::2], dtype=float)
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def ring_mask() -> np.ndarray:
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:35, 10:40] = True
    mask[12:28, 18:32] = False
    return mask


def hole_with_island() -> np.ndarray:
    mask = ring_mask()
    mask[17:23, 22:28] = True  # an island in the hole
    return mask


def several_components() -> np.ndarray:
    mask = np.zeros((30, 60), dtype=bool)
    mask[2:10, 3:12] = True
    mask[15:28, 20:25] = True
    mask[5:25, 40:58] = True
    mask[10:15, 45:50] = False  # one of them with a hole
    return mask


def single_pixels() -> np.ndarray:
    mask = np.zeros((9, 9), dtype=bool)
    mask[0, 0] = mask[4, 4] = mask[8, 2] = mask[3, 8] = True
    return mask


def touching_the_border() -> np.ndarray:
    mask = np.zeros((20, 30), dtype=bool)
    mask[0, :] = mask[:, 0] = mask[-1, 10:] = mask[:, -1] = True
    return mask


def diagonal_neighbours() -> np.ndarray:
    mask = np.zeros((6, 6), dtype=bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True  # 8-connected: one component touching itself
    mask[1, 4] = mask[2, 3] = True
    return mask


def checkerboard() -> np.ndarray:
    return (np.indices((7, 8)).sum(axis=0) % 2).astype(bool)


SHAPES = {
    "ring": ring_mask,
    "hole-with-island": hole_with_island,
    "several-components": several_components,
    "single-pixels": single_pixels,
    "touching-the-border": touching_the_border,
    "full": lambda: np.ones((7, 5), dtype=bool),
    "one-pixel-image": lambda: np.ones((1, 1), dtype=bool),
    "diagonal-neighbours": diagonal_neighbours,
    "checkerboard": checkerboard,
    "small-square": lambda: np.pad(np.ones((3, 3), dtype=bool), 2),  # centre-traced: IoU 0.44 before
}


@pytest.mark.parametrize("name", SHAPES)
def test_polygons_fill_back_to_the_mask(name: str) -> None:
    mask = SHAPES[name]()
    components = encode_polygons(mask)
    filled = fill(components, *mask.shape)
    assert iou(filled, mask) >= 0.99
    assert np.array_equal(filled, mask)  # in fact exact: the rings run along pixel edges
    json.dumps(components)  # plain ints, ready for the response


def test_structure_components_rings_and_winding() -> None:
    (component,) = encode_polygons(ring_mask())
    exterior, hole = component
    assert exterior == [10, 5, 10, 35, 40, 35, 40, 5]  # pixel corners: columns 10..39 span x 10..40
    assert sorted(zip(hole[0::2], hole[1::2])) == [(18, 12), (18, 28), (32, 12), (32, 28)]
    assert signed_area(exterior) == -30 * 30 and signed_area(hole) == 14 * 16  # opposite windings

    island_case = encode_polygons(hole_with_island())
    assert sorted(len(component) for component in island_case) == [1, 2]  # the island is a component of its own
    assert sorted(len(component) for component in encode_polygons(several_components())) == [1, 1, 2]
    assert len(encode_polygons(single_pixels())) == 4
    assert encode_polygons(np.zeros((5, 5), dtype=bool)) == []


def test_random_masks_fill_back_exactly() -> None:
    generator = np.random.default_rng(7)
    for _ in range(300):
        height, width = generator.integers(1, 24, size=2)
        mask = generator.random((height, width)) < generator.random()
        components = encode_polygons(mask)
        assert np.array_equal(fill(components, height, width), mask)
        for component in components:  # exteriors one way, holes the other
            assert signed_area(component[0]) < 0 and all(signed_area(hole) > 0 for hole in component[1:])


def test_large_blobs_with_holes_fill_back_and_match_rle() -> None:
    """A 1080p mask with a few large components (an annulus, an ellipse with a hole, a bar) and speckle."""
    mask = np.zeros((1080, 1920), dtype=np.uint8)
    cv2.circle(mask, (500, 500), 400, 1, -1)
    cv2.circle(mask, (500, 500), 150, 0, -1)
    cv2.ellipse(mask, (1400, 600), (400, 300), 30, 0, 360, 1, -1)
    cv2.circle(mask, (1400, 600), 60, 0, -1)
    cv2.rectangle(mask, (100, 950), (1800, 1079), 1, -1)
    mask = mask.astype(bool) ^ (np.random.default_rng(0).random(mask.shape) < 0.0002)
    masks = torch.from_numpy(mask[None])
    (components,) = encode_masks(masks, "polygons")
    (rle,) = encode_rle(masks)
    assert np.array_equal(fill(components, 1080, 1920), decode_rle(rle))


# --- through the real path: web -> Redis -> model worker -> encoding -> web ---


@pytest.mark.django_db
def test_served_polygons_fill_back_to_the_served_rle(model_worker, alice) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.conftest import png_bytes

    response = alice.client.post(
        "/api/v1/uploads/", {"file": SimpleUploadedFile("p.png", png_bytes(160, 120, seed=11))}, format="multipart"
    )
    assert response.status_code == 201, response.json()
    image_id = response.json()["id"]
    answers = {}
    for mask_format in ("rle", "polygons"):
        response = alice.client.post(
            "/api/v1/segment/",
            {"image": image_id, "prompts": [{"text": "dog"}, {"points": [[40, 50]]}], "threshold": 0.0,
             "mask_format": mask_format, "max_instances": 5},
            format="json",
        )
        assert response.status_code == 200, response.json()
        answers[mask_format] = response.json()["results"]
    compared = 0
    for rle_result, polygon_result in zip(answers["rle"], answers["polygons"], strict=True):
        assert len(rle_result["instances"]) == len(polygon_result["instances"]) > 0
        for rle_instance, polygon_instance in zip(rle_result["instances"], polygon_result["instances"], strict=True):
            expected = decode_rle(rle_instance["mask"])
            assert np.array_equal(fill(polygon_instance["mask"], 120, 160), expected)
            compared += int(expected.any())
    assert compared > 0  # not only empty masks

