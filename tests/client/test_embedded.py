"""The client against the embedded default (`manage.py serve` with no Postgres or Redis, the tiny
SAM3 in process): who am I, uploads with de-duplication, segmentation with masks compared bit for
bit to the server's RLE decoded by pycocotools, overlays, typed errors; blocking and asyncio
clients; the `sam3` command line as a shell user runs it."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json

import numpy as np
import pytest
import requests
import sam3_client
from PIL import Image
from pycocotools import mask as coco_mask
from sam3_client import AsyncClient, Client

from tests.client.conftest import sam3, static_keys
from tests.conftest import free_port, mp4_bytes

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools under numpy 2
LOW = 0.0  # the tiny random model scores low: a zero threshold makes instances appear


def photo(seed: int = 1, width: int = 160, height: int = 120) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def photo_file(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(png(photo()))
    return path


def coco_decode(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


# --- identity, settings, errors ---


def test_me_with_settings_given_or_from_the_environment(embedded_server, monkeypatch) -> None:
    first, second = static_keys()
    with Client(embedded_server.url, first) as client:
        me = client.me()
    assert me.username.startswith("envkey-") and me.api_key and me.api_key.startswith("env:")
    assert me.quota.max_upload_bytes > 0 and me.requests_today >= 1

    monkeypatch.setenv("SAM3_SERVER_URL", embedded_server.url + "/api/v1/")  # the API root works too
    monkeypatch.setenv("SAM3_API_KEY", second)
    with Client() as client:
        other = client.me()
    assert other.id != me.id  # each key of API_KEYS is its own user

    async def async_me() -> sam3_client.Me:
        async with AsyncClient(embedded_server.url, first) as client:
            return await client.me()

    assert asyncio.run(async_me()).id == me.id


def test_errors_are_typed_and_carry_the_request_id(embedded_server) -> None:
    with Client(embedded_server.url, "not-a-key") as client, pytest.raises(sam3_client.AuthenticationError) as refused:
        client.me()
    assert refused.value.status == 401 and refused.value.code == "invalid_api_key"
    assert refused.value.request_id and refused.value.request_id in str(refused.value)

    with Client(embedded_server.url, static_keys()[0]) as client:
        with pytest.raises(sam3_client.NotFound) as missing:
            client.uploads.get("3fa85f64-5717-4562-b3fc-2c963f66afa6")
        assert missing.value.code == "not_found" and missing.value.request_id
        with pytest.raises(sam3_client.InvalidPrompt) as outside:
            client.segment(png(photo()), points=[[500, 10]])
        assert outside.value.code == "outside_image" and outside.value.status == 400
        with pytest.raises(sam3_client.InvalidPrompt) as too_long:
            client.segment(png(photo()), text=" ".join(["dog"] * 40))
        assert too_long.value.code == "prompt_too_long"
        with pytest.raises(sam3_client.UnsupportedMedia) as not_an_image:
            client.segment(b"%PDF-1.4 not an image", text="dog")
        assert not_an_image.value.status == 415
        with pytest.raises(ValueError, match="give text"):
            client.segment(png(photo()))
        with pytest.raises(FileNotFoundError):
            client.segment("/nonexistent/photo.png", text="dog")

    with Client(f"http://127.0.0.1:{free_port()}", "k", max_retries=1) as client, pytest.raises(sam3_client.APIConnectionError):
        client.me()  # nothing listens there: retried once, then raised


def test_both_clients_have_the_same_methods() -> None:
    import inspect

    def surface(obj: object) -> dict[str, list[str]]:
        return {
            name: list(inspect.signature(getattr(obj, name)).parameters)
            for name in dir(obj) if not name.startswith("_") and callable(getattr(obj, name))
        }

    blocking, asynchronous = Client("http://127.0.0.1:9", "k"), AsyncClient("http://127.0.0.1:9", "k")  # nothing is sent
    for sync_side, async_side in ((blocking, asynchronous), (blocking.uploads, asynchronous.uploads),
                                  (blocking.sessions, asynchronous.sessions), (sam3_client.Session, sam3_client.AsyncSession)):
        assert surface(sync_side) == surface(async_side), sync_side
    assert inspect.iscoroutinefunction(asynchronous.segment) and not inspect.iscoroutinefunction(blocking.segment)
    assert list(inspect.signature(blocking.segment).parameters)[:2] == ["image", "text"]
    assert {"me", "segment", "close"} <= set(surface(blocking))
    assert {"create", "get", "find", "list", "content", "delete"} <= set(surface(blocking.uploads))
    assert {"add_text", "add_points", "add_boxes", "remove_object", "reset", "propagate", "frames", "cancel", "close", "refresh"} <= set(
        surface(sam3_client.Session)
    )
    blocking.close()


# --- uploads ---


def test_uploads_from_every_source_with_deduplication(embedded_server, photo_file, tmp_path) -> None:
    with Client(embedded_server.url, static_keys()[0]) as client:
        before = {u.id for u in client.uploads.list()}
        made = client.uploads.create(photo_file)
        assert made.kind == "image" and (made.width, made.height) == (160, 120)
        assert made.sha256 == hashlib.sha256(photo_file.read_bytes()).hexdigest() and made.original_name == "photo.png"

        again = client.uploads.create(photo_file.read_bytes())  # same content as bytes: not sent again
        assert again.id == made.id
        forced = client.uploads.create(photo_file, dedupe=False)
        assert forced.id != made.id and forced.sha256 == made.sha256

        from_array = client.uploads.create(photo(seed=5))
        assert (from_array.width, from_array.height, from_array.media_type) == (160, 120, "image/png")
        assert client.uploads.content(from_array) == png(photo(seed=5))  # Pillow's PNG of the same pixels
        from_pil = client.uploads.create(Image.fromarray(photo(seed=6)), name="pil.png")
        assert from_pil.original_name == "pil.png"
        video_path = tmp_path / "clip.mp4"
        video_path.write_bytes(mp4_bytes(frames=6))
        video = client.uploads.create(video_path)
        assert video.kind == "video" and video.frame_count == 6

        assert client.uploads.find(made.sha256.upper()) in (made, forced)
        assert client.uploads.find("0" * 64) is None
        assert client.uploads.get(made.id) == made
        mine = list(client.uploads.list(page_size=2))  # read over several pages
        assert {u.id for u in mine} - before == {made.id, forced.id, from_array.id, from_pil.id, video.id}
        assert [u.created_at for u in mine] == sorted((u.created_at for u in mine), reverse=True)

        for upload in (made, forced, from_array, from_pil, video):
            client.uploads.delete(upload)
        with pytest.raises(sam3_client.NotFound):
            client.uploads.delete(made.id)
        assert {u.id for u in client.uploads.list()} == before


def test_async_uploads_and_concurrent_segments(embedded_server) -> None:
    images = [png(photo(seed=10 + i)) for i in range(3)]

    async def scenario() -> tuple[list[sam3_client.Upload], list[sam3_client.SegmentResult], list[sam3_client.Upload]]:
        async with AsyncClient(embedded_server.url, static_keys()[1]) as client:
            uploads = [await client.uploads.create(content) for content in images]
            again = await client.uploads.create(images[0])
            assert again.id == uploads[0].id
            assert await client.uploads.find(uploads[1].sha256) == uploads[1] == await client.uploads.get(uploads[1].id)
            assert await client.uploads.content(uploads[2]) == images[2]
            assert (await client.me()).username.startswith("envkey-")
            results = await asyncio.gather(*(client.segment(u, text="dog", threshold=LOW) for u in uploads))
            listed = [u async for u in client.uploads.list(page_size=1)]
            for upload in uploads:
                await client.uploads.delete(upload.id)
            return uploads, results, listed

    uploads, results, listed = asyncio.run(scenario())
    assert {u.id for u in uploads} <= {u.id for u in listed}
    with Client(embedded_server.url, static_keys()[1]) as client:
        for content, result in zip(images, results):
            blocking = client.segment(content, text="dog", threshold=LOW)
            assert result.sha256 == hashlib.sha256(content).hexdigest() and result.instances
            assert np.array_equal(result.masks, blocking.masks)  # the async client sees the same answer


# --- segmentation ---


def test_masks_are_bit_equal_to_the_servers_rle_decoded_by_pycocotools(embedded_server, photo_file) -> None:
    key = static_keys()[0]
    with Client(embedded_server.url, key) as client:
        result = client.segment(photo_file, text="dog", threshold=LOW)
    # The same request without the client; its RLE decoded by pycocotools directly.
    plain = requests.post(
        f"{embedded_server.url}/api/v1/segment/", headers={"X-API-Key": key}, timeout=60,
        files={"file": ("photo.png", photo_file.read_bytes())}, data={"prompts": '[{"text": "dog"}]', "threshold": "0"},
    ).json()
    instances = plain["results"][0]["instances"]
    assert len(instances) == len(result.instances) > 1
    expected = np.stack([coco_decode(i["mask"]) for i in instances])
    assert result.masks.dtype == bool and result.masks.shape == (len(instances), 120, 160)
    assert np.array_equal(result.masks, expected)
    assert expected.any() and not expected.all()
    assert [i.score for i in result.instances] == [i["score"] for i in instances]
    assert [list(i.box) for i in result.instances] == [i["box"] for i in instances]
    assert [i.mask.area for i in result.instances] == [int(m.sum()) for m in expected]
    assert result.instances[0].mask.rle == instances[0]["mask"]
    assert result.width == 160 and result.height == 120 and result.worker.startswith("embedded@")
    assert result.timings.total >= result.timings.compute > 0
    assert result.warning and "meaningless" in result.warning  # the tiny random model says so


def test_polygon_and_png_masks_decode_to_the_same_pixels(embedded_server, photo_file) -> None:
    with Client(embedded_server.url, static_keys()[0]) as client:
        rle = client.segment(photo_file, text="dog", threshold=LOW)
        polygons = client.segment(photo_file, text="dog", threshold=LOW, mask_format="polygons")
        as_png = client.segment(photo_file, text="dog", threshold=LOW, mask_format="png")
        none = client.segment(photo_file, text="dog", threshold=LOW, mask_format="none")
    assert polygons.instances[0].mask.format == "polygons" and isinstance(polygons.instances[0].mask.raw, list)
    assert np.array_equal(polygons.masks, rle.masks)
    assert np.array_equal(as_png.masks, rle.masks)
    assert polygons.instances[0].mask.rle == rle.instances[0].mask.rle  # re-encoded from the array
    with pytest.raises(ValueError, match="not sent"):
        _ = none.instances[0].mask.array


def test_prompts_inputs_cache_and_overlay(embedded_server, photo_file) -> None:
    pixels = photo()
    with Client(embedded_server.url, static_keys()[0]) as client:
        upload = client.uploads.create(photo_file)
        first = client.segment(upload, text="dog", threshold=LOW)
        second = client.segment(upload.id, text=["dog", "cat"], points=[[20, 30], [100, 90]], point_labels=[1, 0], threshold=LOW)
        from_array = client.segment(pixels, text="dog", threshold=LOW)
        exemplars = client.segment(upload, boxes=[[10, 10, 60, 50]], threshold=LOW)
        client.uploads.delete(upload)
    assert second.cache_hit  # the upload's features were cached by the first request
    assert [r.prompt.get("text") for r in second.results] == ["dog", "cat", None]
    assert second.results[2].prompt["points"] == [[20.0, 30.0], [100.0, 90.0]] and second.results[2].object_score is not None
    assert len(second.results[2].instances) == 1  # one object from clicks
    assert np.array_equal(second.results[0].masks, first.masks)
    assert np.array_equal(from_array.masks, first.masks)  # an array is sent as the same pixels
    assert exemplars.results[0].prompt["boxes"] == [[10.0, 10.0, 60.0, 50.0]]

    overlay = sam3_client.draw_overlay(pixels, first, boxes=False)
    drawn = np.asarray(overlay)
    assert overlay.size == (160, 120)
    union = first.masks.any(axis=0)
    assert not np.array_equal(drawn[union], pixels[union])  # tinted where a mask is
    assert np.array_equal(drawn[~union], pixels[~union])  # untouched elsewhere


# --- the command line ---


def test_cli_segment_writes_an_overlay_or_the_answer(embedded_server, photo_file, tmp_path) -> None:
    key = static_keys()[0]
    overlay = tmp_path / "overlay.png"
    run = sam3("segment", str(photo_file), "--text", "dog", "--threshold", "0", "--out", str(overlay), server=embedded_server.url, key=key)
    assert run.returncode == 0, run.stderr
    assert "prompt 1 (text \"dog\"" in run.stdout and "score" in run.stdout
    assert "meaningless" in run.stderr  # the server's warning is passed on
    assert Image.open(overlay).size == (160, 120)

    answer = tmp_path / "masks.json"
    run = sam3("segment", str(photo_file), "--point", "20,30", "--out", str(answer), server=embedded_server.url, key=key)
    assert run.returncode == 0, run.stderr
    body = json.loads(answer.read_text())
    assert body["results"][0]["prompt"]["points"] == [[20.0, 30.0]]
    assert coco_decode(body["results"][0]["instances"][0]["mask"]).shape == (120, 160)


def test_cli_uploads_and_me(embedded_server, photo_file) -> None:
    key, server = static_keys()[1], embedded_server.url
    added = sam3("uploads", "add", str(photo_file), server=server, key=key)
    assert added.returncode == 0, added.stderr
    upload_id = added.stdout.strip()
    assert sam3("uploads", "add", str(photo_file), server=server, key=key).stdout.strip() == upload_id  # not sent twice
    listing = sam3("uploads", "ls", server=server, key=key)
    assert listing.returncode == 0 and upload_id in listing.stdout and "photo.png" in listing.stdout
    rows = [json.loads(line) for line in sam3("uploads", "ls", "--json", server=server, key=key).stdout.splitlines()]
    assert upload_id in [row["id"] for row in rows]
    assert sam3("uploads", "rm", upload_id, server=server, key=key).returncode == 0
    again = sam3("uploads", "rm", upload_id, server=server, key=key)
    assert again.returncode == 1 and "404 not_found" in again.stderr
    me = sam3("me", "--json", server=server, key=key)
    assert me.returncode == 0 and json.loads(me.stdout)["username"].startswith("envkey-")
    assert "requests today" in sam3("me", server=server, key=key).stdout


def test_cli_exit_codes_and_messages(embedded_server, photo_file) -> None:
    server = embedded_server.url
    refused = sam3("me", server=server, key="wrong-key")
    assert refused.returncode == 4 and "401 invalid_api_key" in refused.stderr and "SAM3_API_KEY" in refused.stderr
    unreachable = sam3("me", "--retries", "0", server=f"http://127.0.0.1:{free_port()}", key="k")
    assert unreachable.returncode == 3 and "cannot reach the server" in unreachable.stderr
    missing = sam3("segment", "/nonexistent.png", "--text", "dog", server=server)
    assert missing.returncode == 2 and "No such file" in missing.stderr
    bad_point = sam3("segment", str(photo_file), "--point", "12", server=server)
    assert bad_point.returncode == 2 and "x,y" in bad_point.stderr
    bad_out = sam3("segment", str(photo_file), "--text", "dog", "--out", "x.gif", server=server)
    assert bad_out.returncode == 2 and "--out" in bad_out.stderr
    no_prompt = sam3("segment", str(photo_file), server=server)
    assert no_prompt.returncode == 2 and "--text" in no_prompt.stderr
    for output in (refused, unreachable, missing, bad_point, bad_out):
        assert "Traceback" not in output.stderr
    assert sam3("--version").stdout.startswith("sam3-client ")
