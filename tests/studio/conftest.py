"""Studio in a real browser: Debian's chromium driven by Playwright, against real server processes.

Every page opened here is watched: an uncaught script error, a Content-Security-Policy violation or
a request to any host other than the server fails the test. Screenshots of each step go to
STUDIO_SCREENSHOT_DIR (default /tmp/studio-screenshots), not into the repository.
"""

from __future__ import annotations

import base64
import io
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
import numpy as np
import pytest
import requests
from pycocotools import mask as coco_mask

from tests.conftest import ROOT, free_port, stop_process_group, wait_until_ready

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOTS = Path(os.environ.get("STUDIO_SCREENSHOT_DIR", "/tmp/studio-screenshots"))
VIEWPORT = {"width": 1366, "height": 800}  # a laptop screen
FILL_ALPHA = round(0.45 * 255)  # render.js: FILL_ALPHA; outlines are opaque
# The browser fixture lifts Django's async-safety check in this process; the servers and workers
# the tests start keep it (pass this to them, whatever order fixtures were set up in).
KEEP_ASYNC_CHECK = {"DJANGO_ALLOW_ASYNC_UNSAFE": ""}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (.ci/run installs the `chromium` package)")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        # Playwright's sync API leaves its event loop marked as running in this thread, so Django's
        # ORM (fixtures, assertions) would refuse to run: nothing runs concurrently here, so allow it.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()


# --- the server ---

@dataclass
class Server:
    url: str
    key: str

    def api(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> requests.Response:
        headers = {"X-API-Key": key or self.key}
        return requests.request(method, f"{self.url}/api/v1/{path}", headers=headers, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def embedded_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The README's quick start: `manage.py serve` on the embedded default (SQLite, in-process
    model: the tiny SAM3), one user with a key. Uploads are limited to 1 MiB for the oversize test."""
    base = tmp_path_factory.mktemp("studio-embedded")
    port = free_port()
    env = {
        **os.environ, "DATABASE_URL": "", "REDIS_URL": "", "DJANGO_SECRET_KEY": "", "DATA_DIR": str(base / "var"),
        "UPLOAD_DIR": str(base / "uploads"), "OUTPUT_DIR": str(base / "outputs"), "SAM3_CHECKPOINT": str(tiny_checkpoint),
        "SAM3_BPE_PATH": "/nonexistent", "MAX_UPLOAD_SIZE_MB": "1",
        "OMP_NUM_THREADS": "1",  # torch's idle threads would spin against the browser on a small machine
        "SERVER_HOST": "127.0.0.1", "SERVER_PORT": str(port), "METRICS_PORT": str(free_port()), **KEEP_ASYNC_CHECK,
    }
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    key = subprocess.run(
        [sys.executable, "manage.py", "create_api_key", "--user", "alice"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()
    log_path = base / "server.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--no-migrate"],
        cwd=ROOT, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    server = Server(f"http://127.0.0.1:{port}", key)
    try:
        wait_until_ready(server.url, process, log_path)
        yield server
    finally:
        stop_process_group(process)


# --- the page ---

@dataclass
class Studio:
    page: Any
    server_url: str
    name: str
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, url)
    sockets: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    steps: int = 0

    def shot(self, step: str) -> Path:
        self.steps += 1
        path = SCREENSHOTS / f"{self.name}-{self.steps:02d}-{step}.png"
        self.page.screenshot(path=path)
        return path

    def open(self, fragment: str = "") -> None:
        self.page.goto(f"{self.server_url}/studio/{fragment}")

    def sign_in(self, key: str) -> None:
        self.page.get_by_role("textbox", name="API key").fill(key)
        self.page.get_by_role("button", name="Sign in").click()

    def notice(self) -> str:
        self.page.wait_for_selector("#notice:not([hidden])")
        return self.page.inner_text("#notice")

    def overlay(self, stage: str) -> np.ndarray:
        """The masks layer of a stage as it is on screen: RGBA, height x width x 4."""
        shape, data = self.page.evaluate(
            """(selector) => {
                const canvas = document.querySelector(selector + " .stage-masks");
                const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
                let text = "";
                for (let at = 0; at < pixels.length; at += 0x8000) text += String.fromCharCode(...pixels.subarray(at, at + 0x8000));
                return [[canvas.height, canvas.width], btoa(text)];
            }""",
            stage,
        )
        return np.frombuffer(base64.b64decode(data), dtype=np.uint8).reshape(shape[0], shape[1], 4)

    def click_picture(self, stage: str, x: float, y: float, size: tuple[int, int], button: str = "left") -> None:
        """A click on picture pixel (x, y) of a stage showing a width x height picture."""
        box = self.page.locator(f"{stage} .stage-marks").bounding_box()
        width, height = size
        self.page.mouse.click(box["x"] + (x + 0.5) * box["width"] / width, box["y"] + (y + 0.5) * box["height"] / height, button=button)

    def move_away(self) -> None:
        self.page.mouse.move(0, 0)  # no hover highlight while pixels are read


@pytest.fixture
def studio(browser: Any, request: pytest.FixtureRequest) -> Iterator[Callable[[str], Studio]]:
    """Opens Studio pages in fresh browser contexts (empty sessionStorage), each one watched."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    contexts: list[Any] = []
    opened: list[Studio] = []

    def make(server_url: str) -> Studio:
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        studio = Studio(page, server_url, re.sub(r"\W+", "-", request.node.name).strip("-"))
        page.on("request", lambda sent: studio.requests.append((sent.method, sent.url)))
        page.on("websocket", lambda socket: studio.sockets.append(socket.url))
        page.on("pageerror", lambda error: studio.problems.append(f"uncaught: {error}"))
        page.on("console", lambda message: "Content Security Policy" in message.text and studio.problems.append(message.text))
        opened.append(studio)
        return studio

    yield make
    try:
        for studio in opened:
            assert not studio.problems, studio.problems
            origin = urlsplit(studio.server_url)
            for _, url in studio.requests:
                sent = urlsplit(url.removeprefix("blob:"))
                assert (sent.scheme, sent.netloc) == (origin.scheme, origin.netloc), f"a request left the server: {url}"
            for url in studio.sockets:
                assert urlsplit(url).netloc == origin.netloc and urlsplit(url).scheme == "ws", url
    finally:
        for context in contexts:
            context.close()


# --- masks as the page must show them ---

def decode(rle: dict) -> np.ndarray:
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def expected_overlay(masks: list[np.ndarray], colours: list[tuple[int, int, int]], shape: tuple[int, int]) -> np.ndarray:
    """render.js paintMasks in numpy: each mask in order fills its pixels with its colour at the fill
    alpha, then makes its outline (pixels with a 4-neighbour outside the mask or the picture) opaque."""
    picture = np.zeros((*shape, 4), dtype=np.uint8)
    for mask, colour in zip(masks, colours):
        padded = np.pad(mask, 1)
        inside = mask & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
        picture[mask, :3] = colour
        picture[mask, 3] = FILL_ALPHA
        picture[mask & ~inside, 3] = 255
    return picture


def assert_overlay_matches(actual: np.ndarray, masks: list[np.ndarray], colours: list[tuple[int, int, int]]) -> None:
    expected = expected_overlay(masks, colours, actual.shape[:2])
    assert actual.shape == expected.shape
    covered = expected[..., 3] > 0
    assert np.array_equal(actual[..., 3] > 0, covered), "the painted pixels are not the masks' pixels"
    assert np.array_equal(actual[..., 3], expected[..., 3]), "fills and outlines differ"
    # The canvas stores premultiplied colour: at the fill alpha, reading back rounds by a unit or two.
    difference = np.abs(actual[..., :3].astype(int) - expected[..., :3].astype(int))
    assert difference[covered].max(initial=0) <= 2, "a mask has the wrong colour"


def colours_of(page: Any, items: str) -> list[tuple[int, int, int]]:
    """The colours the page's list gives its instances or objects, in list (= paint) order."""
    values = page.eval_on_selector_all(items, "(items) => items.map((item) => item.dataset.colour)")
    return [tuple(int(part) for part in value.split(",")) for value in values]


# --- media ---

def h264_mp4(path: Path, frames: int = 12, width: int = 160, height: int = 120, fps: int = 10) -> Path:
    """A clip browsers can play (H.264): a yellow block moving right over a blue background."""
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for index in range(frames):
            image = np.full((height, width, 3), (40, 90, 160), dtype=np.uint8)
            image[30:80, 10 + 6 * index : 50 + 6 * index] = (240, 200, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def photo_png(path: Path, width: int = 320, height: int = 240) -> Path:
    from PIL import Image

    rng = np.random.default_rng(7)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:] = (90, 140, 200)
    image[60:180, 80:220] = (200, 120, 40)
    image += rng.integers(0, 30, image.shape, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path
