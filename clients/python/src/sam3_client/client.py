"""``Client`` (blocking) and ``AsyncClient`` (asyncio): the same methods, defined once in the
``*Base`` classes as operations (see ``_core``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from sam3_client._core import (
    AsyncBound,
    AsyncDriver,
    Blocking,
    Bound,
    Call,
    FilePart,
    Op,
    Stream,
    SyncBound,
    SyncDriver,
    operation,
    stream,
)
from sam3_client.config import ClientConfig, RetryPolicy
from sam3_client.live import AsyncLive, Live, LiveRun
from sam3_client.masks import MaskFormat
from sam3_client.media import ImageSource, UploadRef, VideoSource, encode_png, resolve, sha256_of
from sam3_client.models import Me, SegmentResult, SessionInfo, Upload, floats
from sam3_client.sessions import AsyncSession, Session

Point = Sequence[float]
BoxCoordinates = Sequence[float]


def _id(upload: Upload | str) -> str:
    return upload.id if isinstance(upload, Upload) else str(upload)


def _to_send(source: Any, name: str | None) -> Op[UploadRef | FilePart]:
    resolved = resolve(source, name=name)
    if isinstance(resolved, UploadRef | FilePart):
        return resolved
    encoded: FilePart = yield Blocking(lambda: encode_png(resolved, name))
    return encoded


def upload_file(bound: Bound, source: Any, *, name: str | None = None, dedupe: bool = True) -> Op[Upload]:
    """Upload ``source`` unless it is already an upload, or (``dedupe``) the server already has a
    file of yours with the same SHA-256."""
    part = yield from _to_send(source, name)
    if isinstance(part, UploadRef):
        return Upload.from_json((yield from bound._json("GET", f"uploads/{part.id}/")))
    if dedupe:
        digest = yield Blocking(lambda: sha256_of(part))
        page = yield from bound._json("GET", "uploads/", params={"sha256": digest, "limit": 1})
        if page["results"]:
            return Upload.from_json(page["results"][0])
    return Upload.from_json((yield from bound._json("POST", "uploads/", files={"file": part})))


def build_prompts(
    *, text: str | Sequence[str] | None, boxes: Sequence[BoxCoordinates] | None, box_labels: Sequence[int] | None,
    points: Sequence[Point] | None, point_labels: Sequence[int] | None, box: BoxCoordinates | None, multimask: bool,
    prompts: Sequence[dict[str, Any]] | None,
) -> list[dict[str, Any]]:
    """One concept prompt per text (exemplar ``boxes`` join a single text, or stand alone), one
    interactive prompt for ``points`` and/or ``box``, then ``prompts`` as given."""
    texts = [text] if isinstance(text, str) else list(text or [])
    built: list[dict[str, Any]] = [{"text": t} for t in texts]
    if boxes is not None:
        if len(texts) > 1:
            raise ValueError("exemplar boxes go with at most one text; pass several prompts in `prompts`")
        exemplars: dict[str, Any] = {"boxes": [floats(b) for b in boxes]}
        if box_labels is not None:
            exemplars["box_labels"] = [int(v) for v in box_labels]
        if built:
            built[0].update(exemplars)
        else:
            built.append(exemplars)
    if points is not None or box is not None:
        interactive: dict[str, Any] = {"multimask": multimask}
        if points is not None:
            interactive["points"] = [floats(p) for p in points]
            interactive["point_labels"] = [int(v) for v in point_labels] if point_labels is not None else [1] * len(points)
        if box is not None:
            interactive["box"] = floats(box)
        built.append(interactive)
    built.extend(dict(p) for p in prompts or [])
    if not built:
        raise ValueError("give text, boxes, points, box or prompts")
    return built


class ClientBase(Bound):
    """Shared by :class:`Client` and :class:`AsyncClient`."""

    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, *, timeout: float = 300.0, connect_timeout: float = 10.0,
        max_retries: int = 3, retry: RetryPolicy | None = None,
    ) -> None:
        """``base_url`` and ``api_key`` default to ``SAM3_SERVER_URL`` (else http://localhost:8000) and
        ``SAM3_API_KEY``. 429 and 503 answers are retried up to ``max_retries`` times after their
        ``Retry-After`` (``retry`` sets the whole policy)."""
        from sam3_client import __version__

        self._config = ClientConfig.build(
            base_url, api_key, timeout=timeout, connect_timeout=connect_timeout,
            retry=retry or RetryPolicy(max_retries=max_retries), user_agent=f"sam3-client/{__version__}",
        )
        self._open(self._config)

    def _open(self, config: ClientConfig) -> None:
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        return self._config.base_url

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.base_url}>"

    @operation
    def me(self) -> Op[Me]:
        """The calling user, the key used, the effective quota and recent usage."""
        return Me.from_json((yield from self._json("GET", "me/")))

    @operation
    def segment(
        self, image: ImageSource, *, text: str | Sequence[str] | None = None, boxes: Sequence[BoxCoordinates] | None = None,
        box_labels: Sequence[int] | None = None, points: Sequence[Point] | None = None, point_labels: Sequence[int] | None = None,
        box: BoxCoordinates | None = None, multimask: bool = False, prompts: Sequence[dict[str, Any]] | None = None,
        threshold: float | None = None, mask_threshold: float | None = None, mask_format: MaskFormat = "rle",
        max_instances: int | None = None,
    ) -> Op[SegmentResult]:
        """Segment one image: every instance of a concept (``text``, exemplar ``boxes``) and/or one
        object from clicks (``points``, labels 1 on it / 0 background) or a ``box``.

        ``image``: a path, bytes, a PIL image, an RGB uint8 array (sent with the request), or an
        upload / upload id (its features may be cached on the server). The result has one entry per
        prompt, in order; masks decode lazily to boolean arrays (``instance.mask.array``).
        """
        built = build_prompts(
            text=text, boxes=boxes, box_labels=box_labels, points=points, point_labels=point_labels, box=box,
            multimask=multimask, prompts=prompts,
        )
        options: dict[str, Any] = {"mask_format": mask_format}
        for key, value in (("threshold", threshold), ("mask_threshold", mask_threshold), ("max_instances", max_instances)):
            if value is not None:
                options[key] = value
        target = yield from _to_send(image, None)
        if isinstance(target, FilePart):
            form = {"prompts": json.dumps(built), **{key: str(value) for key, value in options.items()}}
            body = yield from self._json("POST", "segment/", data=form, files={"file": target})
        else:
            body = yield from self._json("POST", "segment/", json={"image": target.id, "prompts": built, **options})
        return SegmentResult.from_json(body, mask_format)

    def _live(self, source: Any, text: str | None, mask_format: MaskFormat, fps: float | None, store: bool) -> LiveRun:
        """Live video (``live()`` on :class:`Client` and :class:`AsyncClient`): ``source`` is a
        ``cv2.VideoCapture``-like object (``read()`` giving BGR images), a video file (decoded with
        PyAV) or an iterable of RGB uint8 arrays; its frames go to a new live session as JPEG, at ``fps``
        (a camera's pace: the server drops frames it cannot keep up with) or, by default, each as soon
        as the previous one is answered. Yields each computed frame's objects (:class:`LiveFrame`);
        frames the server dropped are in ``.skipped``, refused ones in ``.errors`` (prompts: ``.prompt_errors``). ``text`` (and
        ``.prompt()`` at any time) adds a phrase to track. The session is closed when the loop ends
        or is left, except with ``store=True``: then its stored results stay readable
        (``sessions.get(live.session_id).frames()``) until you close it. Needs ``sam3-client[live]``."""
        return LiveRun(source, text=text, mask_format=mask_format, fps=fps, store=store, result_timeout=self._config.timeout)


class UploadsBase(Bound):
    """Your uploaded images and videos."""

    def __init__(self, config: ClientConfig) -> None:
        self._config = config

    @operation
    def create(self, file: ImageSource, *, name: str | None = None, dedupe: bool = True) -> Op[Upload]:
        """Upload an image or a video (a path, bytes, a PIL image or an array). With ``dedupe`` a file
        you already uploaded (same SHA-256) is not sent again: its existing upload is returned."""
        return (yield from upload_file(self, file, name=name, dedupe=dedupe))

    @operation
    def get(self, upload: Upload | str) -> Op[Upload]:
        return Upload.from_json((yield from self._json("GET", f"uploads/{_id(upload)}/")))

    @operation
    def find(self, sha256: str) -> Op[Upload | None]:
        """Your upload with this SHA-256 (hex), if any."""
        page = yield from self._json("GET", "uploads/", params={"sha256": sha256.lower(), "limit": 1})
        return Upload.from_json(page["results"][0]) if page["results"] else None

    @stream
    def list(self, *, page_size: int = 100) -> Stream[Upload]:
        """All your uploads, newest first, read page by page."""
        yield from self._pages("uploads/", Upload.from_json, page_size=page_size)

    @operation
    def content(self, upload: Upload | str) -> Op[bytes]:
        """The file's bytes."""
        return (yield from self._call(Call("GET", f"uploads/{_id(upload)}/content/"))).content

    @operation
    def delete(self, upload: Upload | str) -> Op[None]:
        """Delete the file (409 ``video_in_use`` while sessions of it are open)."""
        yield from self._call(Call("DELETE", f"uploads/{_id(upload)}/"))


class SessionsBase(Bound):
    """Your video sessions."""

    def __init__(self, config: ClientConfig) -> None:
        self._config = config

    def _create(self, video: VideoSource, dedupe: bool) -> Op[SessionInfo]:
        upload = yield from upload_file(self, video, dedupe=dedupe)
        return SessionInfo.from_json((yield from self._json("POST", "sessions/", json={"video": upload.id})))

    def _read(self, session_id: str) -> Op[SessionInfo]:
        return SessionInfo.from_json((yield from self._json("GET", f"sessions/{session_id}/")))

    @stream
    def list(self, *, page_size: int = 100) -> Stream[SessionInfo]:
        """The records of all your sessions (open and ended), newest first."""
        yield from self._pages("sessions/", SessionInfo.from_json, page_size=page_size)


class Uploads(UploadsBase, SyncBound):
    def __init__(self, config: ClientConfig, driver: SyncDriver) -> None:
        super().__init__(config)
        self._driver = driver


class AsyncUploads(UploadsBase, AsyncBound):
    def __init__(self, config: ClientConfig, driver: AsyncDriver) -> None:
        super().__init__(config)
        self._driver = driver


class Sessions(SessionsBase, SyncBound):
    def __init__(self, config: ClientConfig, driver: SyncDriver) -> None:
        super().__init__(config)
        self._driver = driver

    def create(self, video: VideoSource, *, dedupe: bool = True) -> Session:
        """Open a session on a video (a path, bytes, or an upload; uploaded first unless the server has it)."""
        return Session(self._config, self._driver, self._driver.run(self._create(video, dedupe)))

    def get(self, session_id: str) -> Session:
        return Session(self._config, self._driver, self._driver.run(self._read(session_id)))


class AsyncSessions(SessionsBase, AsyncBound):
    def __init__(self, config: ClientConfig, driver: AsyncDriver) -> None:
        super().__init__(config)
        self._driver = driver

    async def create(self, video: VideoSource, *, dedupe: bool = True) -> AsyncSession:
        """Open a session on a video (a path, bytes, or an upload; uploaded first unless the server has it)."""
        return AsyncSession(self._config, self._driver, await self._driver.run(self._create(video, dedupe)))

    async def get(self, session_id: str) -> AsyncSession:
        return AsyncSession(self._config, self._driver, await self._driver.run(self._read(session_id)))


class Client(ClientBase, SyncBound):
    """A blocking client. ``with Client() as client:`` closes its connections at the end.

        client = Client("http://localhost:8000", api_key)
        result = client.segment("photo.jpg", text="dog")
        masks = result.masks  # (n, height, width) booleans
    """

    uploads: Uploads
    sessions: Sessions

    def _open(self, config: ClientConfig) -> None:
        self._driver = SyncDriver(config)
        self.uploads = Uploads(config, self._driver)
        self.sessions = Sessions(config, self._driver)

    def live(
        self, source: Any, *, text: str | None = None, mask_format: MaskFormat = "rle", fps: float | None = None,
        store: bool = False,
    ) -> Live:
        run = self._live(source, text, mask_format, fps, store)
        return Live(run, self._driver.iterate(run.stream(self)))

    live.__doc__ = ClientBase._live.__doc__

    def close(self) -> None:
        self._driver.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()


class AsyncClient(ClientBase, AsyncBound):
    """The asyncio client: the same methods as :class:`Client`, as coroutines (streams as async iterators).

        async with AsyncClient() as client:
            result = await client.segment("photo.jpg", text="dog")
    """

    uploads: AsyncUploads
    sessions: AsyncSessions

    def _open(self, config: ClientConfig) -> None:
        self._driver = AsyncDriver(config)
        self.uploads = AsyncUploads(config, self._driver)
        self.sessions = AsyncSessions(config, self._driver)

    def live(
        self, source: Any, *, text: str | None = None, mask_format: MaskFormat = "rle", fps: float | None = None,
        store: bool = False,
    ) -> AsyncLive:
        run = self._live(source, text, mask_format, fps, store)
        return AsyncLive(run, self._driver.iterate(run.stream(self)))

    live.__doc__ = ClientBase._live.__doc__

    async def close(self) -> None:
        await self._driver.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        await self.close()
