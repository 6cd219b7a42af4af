"""Uploads: round trips, detection from content, streaming size bound, broken files, no leftovers."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import struct
import zlib
from urllib.parse import urlsplit

import pytest
import requests
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image

from accounts.models import Quota
from tests.conftest import files_under, mp4_bytes, png_bytes
from uploads.models import Upload

pytestmark = pytest.mark.django_db
UPLOADS = "/api/v1/uploads/"


def upload(client, content: bytes, name: str = "file.bin", content_type: str = "application/octet-stream"):
    return client.post(UPLOADS, {"file": SimpleUploadedFile(name, content, content_type)}, format="multipart")


def assert_nothing_left_on_disk() -> None:
    assert files_under(settings.UPLOAD_DIR) == []


def test_image_round_trip(alice) -> None:
    content = png_bytes(64, 48)
    response = upload(alice.client, content, "photo.png", "image/png")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["kind"] == "image"
    assert body["media_type"] == "image/png"
    assert (body["width"], body["height"]) == (64, 48)
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["size_bytes"] == len(content)
    stored = Upload.objects.get(pk=body["id"])
    assert stored.path.read_bytes() == content
    assert "photo" not in stored.stored_name  # server-generated name
    fetched = alice.client.get(f"{UPLOADS}{body['id']}/")
    assert fetched.json() == body
    downloaded = alice.client.get(f"{UPLOADS}{body['id']}/content/")
    assert b"".join(downloaded.streaming_content) == content
    assert [item["id"] for item in alice.client.get(UPLOADS).json()["results"]] == [body["id"]]
    assert alice.client.delete(f"{UPLOADS}{body['id']}/").status_code == 204
    assert not stored.path.exists()
    assert alice.client.get(f"{UPLOADS}{body['id']}/").status_code == 404


def test_video_round_trip(alice) -> None:
    content = mp4_bytes(frames=12, width=80, height=64, fps=10)
    response = upload(alice.client, content, "clip.mp4", "video/mp4")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["kind"] == "video"
    assert body["media_type"] == "video/mp4"
    assert (body["width"], body["height"], body["frame_count"]) == (80, 64, 12)
    assert body["fps"] == pytest.approx(10.0)
    assert body["duration_seconds"] == pytest.approx(1.2, abs=0.15)
    assert Upload.objects.get(pk=body["id"]).path.read_bytes() == content


def test_format_comes_from_content_not_name_or_type(alice) -> None:
    disguised_png = upload(alice.client, png_bytes(), "movie.mp4", "video/mp4")
    assert disguised_png.status_code == 201
    assert disguised_png.json()["media_type"] == "image/png"
    assert Upload.objects.get(pk=disguised_png.json()["id"]).stored_name.endswith(".png")

    text_as_png = upload(alice.client, b"#!/bin/sh\nrm -rf /\n" * 20, "innocent.png", "image/png")
    assert text_as_png.status_code == 415
    assert text_as_png.json()["error"]["code"] == "unsupported_media_type"

    html_as_mp4 = upload(alice.client, b"<html><script>alert(1)</script></html>", "x.mp4", "video/mp4")
    assert html_as_mp4.status_code == 415
    assert Upload.objects.count() == 1


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"", 400, "empty_file"),
        (png_bytes(200, 200)[:400], 400, "corrupt_file"),  # truncated PNG
        (mp4_bytes()[:300], 400, "corrupt_file"),  # an MP4 cut before its index (moov box)
    ],
    ids=["empty", "truncated-png", "truncated-mp4-header"],
)
def test_broken_files_are_refused_and_leave_nothing(alice, content: bytes, status: int, code: str) -> None:
    response = upload(alice.client, content, "broken.png")
    assert response.status_code == status, response.json()
    assert response.json()["error"]["code"] == code
    assert Upload.objects.count() == 0
    assert_nothing_left_on_disk()


def _index_first(content: bytes, tmp_path) -> bytes:
    """The same MP4 remuxed with its index (moov box) first, as most real MP4s are ("faststart")."""
    import av

    target = tmp_path / "faststart.mp4"
    with av.open(io.BytesIO(content)) as source, av.open(str(target), "w", format="mp4", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return target.read_bytes()


def test_truncated_videos_are_refused(alice, tmp_path) -> None:
    whole = _index_first(mp4_bytes(frames=60), tmp_path)
    complete = upload(alice.client, whole, "clip.mp4", "video/mp4")
    assert complete.status_code == 201 and complete.json()["frame_count"] == 60
    plain = mp4_bytes(frames=60)
    for cut in (whole[: len(whole) // 2], plain[: len(plain) // 2]):  # index kept (lists 60 frames) / index lost
        response = upload(alice.client, cut, "clip.mp4", "video/mp4")
        assert response.status_code == 400, response.json()
        assert response.json()["error"]["code"] == "corrupt_file"
    assert Upload.objects.count() == 1


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that claims huge dimensions: the classic decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(alice) -> None:
    response = upload(alice.client, _png_header_only(60_000, 60_000), "bomb.png")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "image_too_large"
    assert_nothing_left_on_disk()


def test_image_just_under_the_pixel_bound_is_fine(alice, settings) -> None:
    settings.MAX_IMAGE_PIXELS = 100 * 100
    buffer = io.BytesIO()
    Image.new("RGB", (100, 100)).save(buffer, "JPEG")
    assert upload(alice.client, buffer.getvalue(), "ok.jpg").status_code == 201
    Image.new("RGB", (101, 100)).save(buffer := io.BytesIO(), "JPEG")
    assert upload(alice.client, buffer.getvalue(), "big.jpg").json()["error"]["code"] == "image_too_large"


def test_users_own_upload_limit_is_enforced_while_streaming(alice) -> None:
    Quota.objects.create(user=alice.user, max_upload_mb=1)
    response = upload(alice.client, b"\0" * (1024 * 1024 + 10), "big.bin")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert response.json()["error"]["detail"]["limit_bytes"] == 1024 * 1024
    assert_nothing_left_on_disk()
    assert upload(alice.client, png_bytes(), "small.png").status_code == 201


def test_missing_file_field_is_a_validation_error(alice) -> None:
    response = alice.client.post(UPLOADS, {"other": "x"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"
    assert "file" in response.json()["error"]["detail"]


def test_invalid_upload_id_is_404_not_500(alice) -> None:
    assert alice.client.get(f"{UPLOADS}not-a-uuid/").status_code == 404
    assert alice.client.get(f"{UPLOADS}00000000-0000-0000-0000-000000000000/").status_code == 404


@pytest.mark.slow
def test_oversized_bodies_are_cut_off_while_streaming(start_server, alice) -> None:
    server = start_server(MAX_UPLOAD_SIZE_MB="1")
    headers = {"X-API-Key": alice.key}

    # Declared too large: refused before the body is read.
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(
            b"POST /api/v1/uploads/ HTTP/1.1\r\nHost: x\r\nX-API-Key: " + alice.key.encode()
            + b"\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 50000000\r\n\r\n"
        )
        reply = raw.recv(4096).decode()
    assert reply.startswith("HTTP/1.1 413"), reply
    head, _, body = reply.partition("\r\n\r\n")
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    request_id = json.loads(body)["error"]["request_id"]  # every error carries the request id, this early one too
    assert request_id and f"X-Request-ID: {request_id}" in head and f"request_id={request_id}" in server.log()

    # Chunked with no length: cut off once past the bound.
    def endless():
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\r\n"
        for _ in range(400):  # 400 x 64 KiB = 25 MiB if it were all read
            yield b"\0" * 65536

    try:
        response = requests.post(
            f"{server.url}{UPLOADS}", data=endless(), timeout=30,
            headers={**headers, "Content-Type": "multipart/form-data; boundary=b"},
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
    except requests.ConnectionError:
        pass  # the server may close the connection while we are still sending: also a refusal
    assert_nothing_left_on_disk()

    # Within the bound, the same server accepts an upload.
    ok = requests.post(f"{server.url}{UPLOADS}", files={"file": ("a.png", png_bytes())}, headers=headers, timeout=30)
    assert ok.status_code == 201, ok.text
