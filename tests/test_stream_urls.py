"""Live sessions read from a stream URL (issue 9 §3), and the SSRF check in front of them.

End to end: a real server process and a Celery model worker (tiny SAM3) with
STREAM_URL_ALLOWLIST=["127.0.0.1"], reading from an HTTP server in this test process that serves
an MP4 written with PyAV (with Range requests, as file servers do), an MJPEG multipart stream, and
redirects."""

from __future__ import annotations

import ipaddress
import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from inference.stream_urls import address_is_public, check_stream_url, redact, resolve_redirects, scrub
from sam3site.errors import InvalidInput
from tests.conftest import launch_workers, mp4_bytes
from tests.test_live_video import live_url
from tests.test_sessions import api

ALLOWLIST = '["127.0.0.1"]'
MP4_FRAMES, MP4_FPS = 20, 10
MJPEG_FRAMES_PER_CONNECTION, MJPEG_FPS = 8, 10


# --- the address check, in this process ---


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/", "http://127.0.0.2:8080/x", "rtsp://localhost/cam", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://192.168.1.20/", "http://172.16.0.1/",
    "http://100.64.0.1/", "http://[fd00::1]/", "http://[fe80::1]/", "http://224.0.0.1/", "http://240.0.0.1/",
    "http://0.0.0.0/", "http://[::]/", "rtmp://0x7f000001/live", "http://2130706433/",
])
def test_non_public_addresses_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_stream_url(url, [])
    assert refused.value.code == "stream_url_refused"


@pytest.mark.parametrize("url", ["http://8.8.8.8/live.m3u8", "rtsp://user:pw@1.1.1.1:8554/cam", "https://[2606:4700::1111]/a.mp4"])
def test_public_addresses_are_accepted(url: str) -> None:
    assert check_stream_url(url, []) == url


def test_the_allowlist_names_addresses_networks_and_hosts() -> None:
    allowlist = ["127.0.0.1", "10.0.0.0/8", "Camera.LAN"]
    assert check_stream_url("http://127.0.0.1:9000/a", allowlist)
    assert check_stream_url("rtsp://10.20.30.40/cam", allowlist)
    assert check_stream_url("rtsp://camera.lan./cam", allowlist)  # listed by name: not even resolved
    for url in ("http://127.0.0.2/", "http://192.168.0.1/", "http://169.254.169.254/"):
        with pytest.raises(InvalidInput, match="STREAM_URL_ALLOWLIST"):
            check_stream_url(url, allowlist)
    assert not address_is_public(ipaddress.ip_address("::ffff:10.0.0.1"))


@pytest.mark.parametrize(("url", "code"), [
    ("file:///etc/passwd", "unsupported_scheme"), ("ftp://8.8.8.8/x", "unsupported_scheme"), ("concat:a|b", "unsupported_scheme"),
    ("8.8.8.8/stream", "unsupported_scheme"), ("http:///nohost", "invalid_stream_url"), ("http://8.8.8.8:99999/", "invalid_stream_url"),
    ("http://no-such-host.invalid/", "stream_url_unresolvable"), ("http://a\x00b/", "stream_url_unresolvable"),
    ("http://" + "a" * 300 + ".com/", "stream_url_unresolvable"), ("http://[::1/", "invalid_stream_url"),
    ("rtsp://8.8.8.8/" + "a" * 2048, "invalid_stream_url"),
])
def test_other_urls_are_refused_with_their_code(url: str, code: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_stream_url(url, [])
    assert refused.value.code == code


def test_credentials_are_redacted() -> None:
    url = "rtsp://admin:s3cret@8.8.8.8:554/cam?channel=1"
    assert redact(url) == "rtsp://***@8.8.8.8:554/cam?channel=1"
    assert redact("http://8.8.8.8/a") == "http://8.8.8.8/a"
    assert "s3cret" not in scrub(f"Connection refused: '{url}' (password s3cret)", url)


# --- a stream server in this process ---


def hls_files(frames: int, fps: int) -> dict[str, bytes]:
    """A finished HLS playlist and its MPEG-TS segments (1 s each), written with PyAV."""
    with tempfile.TemporaryDirectory() as directory:
        options = {"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"}
        with av.open(f"{directory}/index.m3u8", "w", format="hls", options=options) as container:
            stream = container.add_stream("libx264", rate=fps)  # H.264 in MPEG-TS, as HLS servers send it
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for index in range(frames):
                image = np.full((48, 64, 3), index * 10 % 255, np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        return {f"/hls/{path.name}": path.read_bytes() for path in Path(directory).iterdir()}


def jpeg(index: int) -> bytes:
    image = np.full((48, 64, 3), (index * 25) % 255, np.uint8)
    image[10:30, 5 + index % 40 : 20 + index % 40] = (40, 40, 200)
    return cv2.imencode(".jpg", image)[1].tobytes()


class StreamServer:
    """MP4 (Range requests honoured), MJPEG (a few frames per connection, then the connection ends),
    redirects; counts the requests per path."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.mp4 = mp4_bytes(frames=MP4_FRAMES, fps=MP4_FPS)
        self.files = hls_files(MP4_FRAMES, MP4_FPS)
        self.hits: Counter[str] = Counter()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                with suppress(BrokenPipeError, ConnectionResetError):  # the client had read enough (e.g. a redirect check)
                    self._answer()

            def _answer(self) -> None:
                path = self.path.split("?")[0]
                owner.hits[path] += 1
                if path == "/video.mp4":
                    self._mp4()
                elif path == "/camera.mjpg":
                    self._mjpeg()
                elif path in owner.files:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(owner.files[path])))
                    self.end_headers()
                    self.wfile.write(owner.files[path])
                elif path == "/to-video":
                    self._redirect("/video.mp4")
                elif path == "/to-private":
                    self._redirect("http://10.0.0.1/video.mp4")
                elif path == "/private-later":  # allowed when the web checks, a refused redirect when the worker connects
                    if owner.hits[path] == 1:
                        self._redirect("/video.mp4")
                    else:
                        self._redirect("http://169.254.169.254/latest/")
                else:
                    self.send_error(404)

            def _redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _mp4(self) -> None:
                data, start = owner.mp4, 0
                if (ranged := self.headers.get("Range", "")).startswith("bytes="):
                    start = int(ranged[6:].split("-")[0] or 0)
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def _mjpeg(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                for index in range(MJPEG_FRAMES_PER_CONNECTION):
                    image = jpeg(index)
                    self.wfile.write(
                        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n" % (len(image), image)
                    )
                    self.wfile.flush()
                    time.sleep(1 / MJPEG_FPS)

        self.http = ThreadingHTTPServer((host, 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def url(self, path: str, credentials: str = "") -> str:
        return f"http://{credentials}{self.http.server_address[0]}:{self.http.server_address[1]}{path}"

    def stop(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture(scope="module")
def streams() -> Iterator[StreamServer]:
    server = StreamServer()
    yield server
    server.stop()


def test_redirects_are_followed_only_to_allowed_hosts(streams: StreamServer) -> None:
    assert resolve_redirects(streams.url("/to-video"), ["127.0.0.1"]) == streams.url("/video.mp4")
    with pytest.raises(InvalidInput) as refused:
        resolve_redirects(streams.url("/to-private"), ["127.0.0.1"])
    assert refused.value.code == "stream_url_refused" and "10.0.0.1" in refused.value.message
    with pytest.raises(InvalidInput) as refused:
        resolve_redirects(streams.url("/to-video"), [])  # the first hop is refused before it is contacted
    assert refused.value.code == "stream_url_refused"


# --- end to end: server, model worker, websockets ---


@pytest.fixture(scope="module")
def stream_worker(django_db_setup: None, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    workers = launch_workers(tmp_path_factory.mktemp("workers"), tiny_checkpoint, STREAM_URL_ALLOWLIST=ALLOWLIST)
    yield workers
    workers.stop()


@pytest.fixture
def server(start_server, stream_worker):
    return start_server(STREAM_URL_ALLOWLIST=ALLOWLIST)


def open_stream(server, client, url: str) -> dict:
    created = api(server, client.key, "POST", "/sessions/", json={"live": True, "source_url": url, "mask_format": "none"})
    assert created.status_code == 201, created.text
    return created.json()


def live_socket(server, client, session_id: str) -> ClientConnection:
    return connect(live_url(server, session_id), additional_headers={"X-API-Key": client.key}, open_timeout=10)


def watch(socket, until) -> list[dict]:
    """Every event (the first: the session's status) up to the one ``until`` accepts (frames acknowledged as a client does)."""
    events = []
    while True:
        event = json.loads(socket.recv(timeout=60))
        events.append(event)
        if event["type"] == "frame":
            socket.send(json.dumps({"type": "ack"}))
        if until(event):
            return events


def frame_seqs(events: list[dict]) -> list[int]:
    return [e["seq"] for e in events if e["type"] == "frame"]


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
@pytest.mark.parametrize("path", ["/video.mp4", "/hls/index.m3u8"])
def test_a_file_over_http_is_computed_and_ends_the_session(server, stream_worker, streams, alice, path: str) -> None:
    body = open_stream(server, alice, streams.url(path, credentials="viewer:s3cret@"))
    session_id = body["id"]
    assert "s3cret" not in json.dumps(body) and body["live"]["source_url"] == streams.url(path, "***@")
    with live_socket(server, alice, session_id) as socket:
        events = watch(socket, lambda e: e["type"] == "status" and e["status"] != "ready")
        with pytest.raises(ConnectionClosed):
            socket.recv(timeout=10)
        assert socket.close_code == 4410
    assert events[-1] == {"type": "status", "status": "closed", "message": "The stream ended."}
    seqs = frame_seqs(events)
    assert seqs and seqs == sorted(set(seqs)) and seqs[-1] == MP4_FRAMES - 1  # in order, through the last frame
    times = [e["ts"] for e in events if e["type"] == "frame"]
    assert [t - times[0] for t in times] == [pytest.approx((seq - seqs[0]) / MP4_FPS) for seq in seqs]  # the stream's clock
    skipped = [s for e in events if e["type"] == "skipped" for s in e["seqs"]]
    assert not set(skipped) & set(seqs)
    record = api(server, alice.key, "GET", f"/sessions/{session_id}/").json()
    assert record["status"] == "closed" and "s3cret" not in json.dumps(record)
    assert "s3cret" not in stream_worker.log() and "s3cret" not in server.log()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_an_mjpeg_stream_reconnects_and_stops_with_the_session(server, streams, alice) -> None:
    session_id = open_stream(server, alice, streams.url("/camera.mjpg"))["id"]
    with live_socket(server, alice, session_id) as socket:
        socket.send(json.dumps({"type": "prompt", "text": "dog"}))
        events = watch(socket, lambda e: e["type"] == "frame" and e["seq"] >= MJPEG_FRAMES_PER_CONNECTION + 2)
    reconnecting = [e for e in events if e.get("stream") == "reconnecting"]
    assert reconnecting and reconnecting[0]["attempt"] == 1 and reconnecting[0]["message"]  # the server ended the connection
    assert any(e.get("stream") == "connected" for e in events[events.index(reconnecting[0]) :])
    seqs = frame_seqs(events)
    assert seqs == sorted(set(seqs))  # on across the reconnection
    assert api(server, alice.key, "DELETE", f"/sessions/{session_id}/").status_code == 204
    time.sleep(1.5)  # a connection already under way ends with its frames
    connections = streams.hits["/camera.mjpg"]
    time.sleep(2 * MJPEG_FRAMES_PER_CONNECTION / MJPEG_FPS)
    assert streams.hits["/camera.mjpg"] == connections  # the reader stopped: no more reconnections


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_refused_urls_are_answered_400_without_contacting_them(server, streams, alice) -> None:
    elsewhere = StreamServer("127.0.0.2")  # loopback too, not listed
    try:
        for url, code in [
            (elsewhere.url("/video.mp4"), "stream_url_refused"),
            (elsewhere.url("/video.mp4", credentials="admin:s3cret@"), "stream_url_refused"),
            ("http://169.254.169.254/latest/meta-data/", "stream_url_refused"),
            ("rtsp://10.0.0.1/cam", "stream_url_refused"),
            ("http://[::1]:8000/", "stream_url_refused"),
            (streams.url("/to-private"), "stream_url_refused"),  # an allowed host redirecting to a refused one
            ("file:///etc/passwd", "unsupported_scheme"),
        ]:
            answer = api(server, alice.key, "POST", "/sessions/", json={"live": True, "source_url": url})
            assert answer.status_code == 400, (url, answer.text)
            assert answer.json()["error"]["code"] == code, answer.text
            assert "s3cret" not in answer.text
        not_live = api(server, alice.key, "POST", "/sessions/", json={"source_url": streams.url("/video.mp4")})
        assert not_live.status_code == 400 and "source_url" in not_live.text
        assert sum(elsewhere.hits.values()) == 0 and streams.hits["/to-private"] == 1
        assert api(server, alice.key, "GET", "/sessions/").json()["count"] == 0
    finally:
        elsewhere.stop()

    # allowed when created, refused when the worker connects (the redirect changed): the session fails
    session_id = open_stream(server, alice, streams.url("/private-later"))["id"]
    with live_socket(server, alice, session_id) as socket:
        events = watch(socket, lambda e: e["type"] == "status" and e["status"] != "ready")
    record = api(server, alice.key, "GET", f"/sessions/{session_id}/").json()
    assert events[-1]["status"] == record["status"] == "failed" and "169.254.169.254" in record["error"]
    assert events[-1]["message"] == record["error"]  # told live, or in the first status if it failed before the socket opened


def test_the_redirect_check_connects_to_the_address_it_checked(streams: StreamServer, monkeypatch) -> None:
    """DNS rebinding: the name answers an allowed address twice, then another one (here 127.0.0.2, not
    allowed). Resolving once per hop, the check of both hops (the second is a relative redirect) and
    their requests use the first two answers; a check that resolved again to connect would meet the
    third one on the second hop and be refused."""
    import socket

    port = int(streams.url("/").rsplit(":", 1)[1].split("/")[0])
    real_getaddrinfo = socket.getaddrinfo
    answers = iter(["127.0.0.1", "127.0.0.1"])

    def rebinding(host, *args, **kwargs):
        if host != "rebinding.test":
            return real_getaddrinfo(host, *args, **kwargs)
        address = next(answers, "127.0.0.2")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    final = resolve_redirects(f"http://rebinding.test:{port}/to-video", ["127.0.0.1"])
    assert final == f"http://rebinding.test:{port}/video.mp4"
    assert next(answers, None) is None and streams.hits["/to-video"] >= 1
