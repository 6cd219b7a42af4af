"""Parts of the inference path on their own: mask encodings, the feature cache, the scheduler."""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inference.cache import FeatureCache
from inference.host import HostSettings, ModelHost
from inference.jobs import ConceptPrompt, ImageJob
from inference.masks import (
    decode_rle,
    encode_masks,
    encode_png,
    encode_polygons,
    encode_rle,
    encode_rle_columns_first,
    encode_rle_reference,
    encode_rle_run_boundaries,
)
from inference.scheduler import ModelScheduler
from sam3site.errors import DeadlineExceeded


@pytest.mark.parametrize("encoder", [encode_rle_columns_first, encode_rle_run_boundaries])
@pytest.mark.parametrize("shape", [(3, 7, 9), (2, 1, 1), (4, 1, 6), (2, 6, 1), (1, 32, 32)])
def test_fast_rle_is_byte_identical_to_pycocotools(encoder, shape: tuple[int, int, int]) -> None:
    generator = torch.Generator().manual_seed(sum(shape))
    for density in (0.0, 0.1, 0.5, 0.9, 1.0):
        masks = torch.rand(shape, generator=generator) < density
        assert encoder(masks) == encode_rle_reference(masks)


def test_fast_rle_on_realistic_blobs_round_trips() -> None:
    masks = torch.zeros((5, 108, 192), dtype=torch.bool)
    for index in range(5):
        masks[index, 10 + index : 60 + 5 * index, 20 : 90 + 10 * index] = True
    masks[4] = False  # an empty mask
    encoded = encode_rle(masks)
    assert encoded == encode_rle_reference(masks) == encode_rle_run_boundaries(masks)
    for rle, mask in zip(encoded, masks, strict=True):
        assert rle["size"] == [108, 192]
        assert np.array_equal(decode_rle(rle), mask.numpy())
    assert encode_rle(torch.zeros((0, 4, 4), dtype=torch.bool)) == []
    assert encode_rle_run_boundaries(torch.zeros((0, 4, 4), dtype=torch.bool)) == []


def test_polygons_and_png_describe_the_mask() -> None:
    mask = np.zeros((40, 50), dtype=bool)
    mask[10:20, 5:30] = True
    ((exterior,),) = encode_polygons(mask)  # one component, no hole
    xs, ys = exterior[0::2], exterior[1::2]
    assert (min(xs), max(xs), min(ys), max(ys)) == (5, 30, 10, 20)  # pixel corners, not centres
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(encode_png(mask)))))
    assert np.array_equal(png > 0, mask)
    assert encode_masks(torch.from_numpy(mask[None]), "none") == [None]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_feature_cache_is_bounded_by_bytes_with_lru_eviction() -> None:
    cache: FeatureCache[bytes] = FeatureCache(max_bytes=10, ttl_seconds=60, size_of=len)
    assert cache.put("a", b"1234") and cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # a is now the most recent
    assert cache.put("c", b"1234")  # 12 bytes > 10: evicts b, the least recently used
    assert cache.get("b") is None and cache.get("a") and cache.get("c")
    assert cache.bytes_used == 8 and cache.evictions == 1
    assert not cache.put("huge", b"x" * 11)  # larger than the budget: not stored
    assert cache.stats()["hits"] == 3 and cache.stats()["misses"] == 1


def test_feature_cache_entries_expire() -> None:
    clock = FakeClock()
    cache: FeatureCache[bytes] = FeatureCache(max_bytes=100, ttl_seconds=5, size_of=len, clock=clock)
    cache.put("a", b"1")
    clock.now = 4.9
    assert cache.get("a") == b"1"
    clock.now = 5.0
    assert cache.get("a") is None and cache.bytes_used == 0


def test_disabled_cache_stores_nothing() -> None:
    cache: FeatureCache[bytes] = FeatureCache(max_bytes=0, ttl_seconds=5, size_of=len)
    assert not cache.put("a", b"1") and cache.get("a") is None


@pytest.fixture(scope="module")
def host(tiny_checkpoint: Path) -> ModelHost:
    host = ModelHost(HostSettings(checkpoint=tiny_checkpoint, bpe_path=None, device="cpu", cache_bytes=50 * 2**20))
    host.load()
    assert host.ready, host.reason
    return host


def image_job(tmp_path: Path, seed: int, *, deadline: float | None = None) -> ImageJob:
    path = tmp_path / f"{seed}.png"
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(path)
    return ImageJob(
        request_id=str(seed), image_path=str(path), image_sha256=f"sha-{seed}", prompts=[ConceptPrompt(text="dog")],
        threshold=0.0, deadline=deadline if deadline is not None else time.time() + 60,
    )


def test_jobs_waiting_together_share_one_backbone_pass(host: ModelHost, tmp_path: Path) -> None:
    scheduler = ModelScheduler(host, max_batch_size=4)
    batches: list[int] = []
    original = host.run_image_jobs

    def recording(jobs: list[ImageJob]) -> list:
        batches.append(len(jobs))
        return original(jobs)

    host.run_image_jobs = recording  # type: ignore[method-assign]
    try:
        futures = [scheduler.submit_image(image_job(tmp_path, seed)) for seed in range(6)]
        scheduler.start(load=False)  # all six are waiting when the thread starts
        results = [future.result(timeout=60) for future in futures]
    finally:
        scheduler.stop()
        del host.run_image_jobs
    assert batches == [4, 2]
    assert all(result["results"][0]["instances"] for result in results)
    assert [result["image"]["sha256"] for result in results] == [f"sha-{seed}" for seed in range(6)]


def test_expired_jobs_are_dropped_and_streams_interleave(host: ModelHost, tmp_path: Path) -> None:
    scheduler = ModelScheduler(host)
    order: list[str] = []

    def long_work():  # a propagation of 3 frames
        for frame in range(3):
            order.append(f"frame {frame}")
            yield
        return "done"

    stream = scheduler.submit_stream(long_work())
    expired = scheduler.submit_image(image_job(tmp_path, 1, deadline=time.time() - 1))
    image: Future = scheduler.call(lambda: order.append("image") or "ok")
    scheduler.start(load=False)
    try:
        assert stream.result(timeout=30) == "done"
        assert image.result(timeout=30) == "ok"
        with pytest.raises(DeadlineExceeded):
            expired.result(timeout=30)
    finally:
        scheduler.stop()
    assert order == ["frame 0", "image", "frame 1", "frame 2"]  # the image did not wait for the whole stream


def test_a_dead_workers_ready_list_expires_with_its_frames() -> None:
    """A frame left for a worker that never takes it: its slot and the worker's ready list both
    expire (SLOT_SECONDS), so the lists of dead workers do not pile up in Redis."""
    import asyncio
    import uuid

    from inference.live_frames import SLOT_SECONDS, LiveFrame, push_to_redis, ready_key, slot_key
    from sam3site import redis_clients

    queue, session_id = f"gone-{uuid.uuid4().hex}", str(uuid.uuid4())
    asyncio.run(push_to_redis(session_id, queue, LiveFrame(0, b"jpeg", None, 8, 8)))
    client = redis_clients.client()
    try:
        assert client.lrange(ready_key(queue), 0, -1) == [session_id.encode()]
        assert 0 < client.ttl(ready_key(queue)) <= SLOT_SECONDS
        assert 0 < client.ttl(slot_key(session_id)) <= SLOT_SECONDS
    finally:
        client.delete(ready_key(queue), slot_key(session_id))
