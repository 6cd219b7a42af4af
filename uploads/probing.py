"""What a file really is, read from its content (never its name or Content-Type)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, UnidentifiedImageError

from sam3site.errors import InvalidInput, UnsupportedMedia

IMAGE_MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp", "TIFF": "image/tiff"}
IMAGE_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "TIFF": "tiff"}
# ffmpeg demuxer names (comma-separated aliases) → (media type, extension)
VIDEO_CONTAINERS = {
    "mov": ("video/mp4", "mp4"),
    "mp4": ("video/mp4", "mp4"),
    "matroska": ("video/x-matroska", "mkv"),
    "webm": ("video/webm", "webm"),
    "avi": ("video/x-msvideo", "avi"),
    "mpegts": ("video/mp2t", "ts"),
    "mpeg": ("video/mpeg", "mpg"),
}


class CorruptFile(InvalidInput):
    code, message = "corrupt_file", "The file is truncated or cannot be decoded."


class ImageTooLarge(InvalidInput):
    code = "image_too_large"


@dataclass(frozen=True)
class MediaInfo:
    kind: str  # "image" | "video"
    media_type: str
    extension: str
    width: int
    height: int
    frame_count: int | None = None
    fps: float | None = None
    duration_seconds: float | None = None


def probe_image(path: Path, max_pixels: int, *, decode: bool = True) -> MediaInfo | None:
    """Image info, or None when the content is no image format Pillow knows. ``decode=False`` reads
    the header only (format, size, bomb check), for images a model worker decodes anyway."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image_format = image.format or ""
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageTooLarge(
                        f"The image has {width}x{height} pixels; the limit is {max_pixels} pixels.",
                        detail={"width": width, "height": height, "max_pixels": max_pixels},
                    )
                if image_format not in IMAGE_MEDIA_TYPES:
                    raise UnsupportedMedia(f"Image format {image_format or 'unknown'} is not supported.")
                if decode:
                    image.load()  # full decode: catches truncated and broken data
    except UnidentifiedImageError:
        return None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLarge(f"The image is too large to decode safely: {error}") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise CorruptFile(f"The image is truncated or corrupt: {error}") from None
    return MediaInfo("image", IMAGE_MEDIA_TYPES[image_format], IMAGE_EXTENSIONS[image_format], width, height)


def _container_kind(format_name: str) -> tuple[str, str] | None:
    for alias in format_name.split(","):
        if alias in VIDEO_CONTAINERS:
            return VIDEO_CONTAINERS[alias]
    return None


_IMAGE_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}  # HEIF/AVIF: images, unsupported


def _looks_like_iso_media(path: Path) -> bool:
    """MP4/MOV files (ISO base media) open with an ``ftyp`` box naming a video brand."""
    with path.open("rb") as file:
        head = file.read(12)
    return head[4:8] == b"ftyp" and head[8:12] not in _IMAGE_BRANDS


def probe_video(path: Path) -> MediaInfo | None:
    """Video info, or None when ffmpeg finds no supported video container with a video stream.

    The frame count is what is really there (packets read by one demux pass, no decoding), and
    the last frames are decoded: a truncated or damaged file is refused here rather than failing
    in the middle of a session. Only the first frame and the last group of pictures are decoded."""
    try:
        container = av.open(str(path), mode="r")
    except av.error.InvalidDataError:
        if _looks_like_iso_media(path):  # an MP4/MOV whose index (moov box) is missing: cut off while copying
            raise CorruptFile("The MP4/MOV file is truncated or damaged: its index (moov box) is missing.") from None
        return None
    except av.FFmpegError as error:
        raise CorruptFile(f"The video cannot be opened: {error}") from None
    with container:
        kind = _container_kind(container.format.name)
        if kind is None or not container.streams.video:
            return None
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream), None)
        except av.FFmpegError as error:
            raise CorruptFile(f"The video cannot be decoded: {error}") from None
        if first is None:
            raise CorruptFile("The video has no decodable frames.")
        frame_count = _check_complete(container, stream)
        fps = float(stream.average_rate) if stream.average_rate else None
        duration: float | None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * Fraction(stream.time_base))
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = frame_count / fps if fps else None
        return MediaInfo("video", kind[0], kind[1], first.width, first.height, frame_count, fps, duration)


def _check_complete(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """The number of frames present (counted as sessions.frames counts them), after checking
    that all the frames the container lists are there and that the last ones decode."""
    container.seek(0)
    pts: list[int] = []
    keyframes: list[int] = []
    try:
        for packet in container.demux(stream):
            if packet.pts is None or not packet.size:
                continue
            if packet.is_corrupt:
                raise CorruptFile(f"The video is truncated or damaged after {len(pts)} frames.", detail={"frames_present": len(pts)})
            pts.append(packet.pts)
            if packet.is_keyframe:
                keyframes.append(packet.pts)
    except av.FFmpegError as error:
        raise CorruptFile(f"The video cannot be read after {len(pts)} frames: {error}") from None
    listed = stream.frames
    if listed and len(pts) < listed:
        raise CorruptFile(
            f"The video is truncated: its container lists {listed} frames, {len(pts)} are present.",
            detail={"frames_listed": listed, "frames_present": len(pts)},
        )
    if not pts:
        raise CorruptFile("The video has no frames.")
    last = max(pts)
    tail_start = max((p for p in keyframes if p <= last), default=min(pts))
    decoded: set[int] = set()
    try:
        container.seek(tail_start, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.pts is not None:
                decoded.add(frame.pts)
    except av.FFmpegError as error:
        raise CorruptFile(f"The last frames of the video cannot be decoded: {error}") from None
    if last not in decoded:
        raise CorruptFile("The last frame of the video cannot be decoded.", detail={"frames_present": len(pts)})
    return len(pts)


def probe_media(path: Path, max_pixels: int) -> MediaInfo:
    if path.stat().st_size == 0:
        raise InvalidInput("The file is empty.", code="empty_file")
    info = probe_image(path, max_pixels) or probe_video(path)
    if info is None:
        raise UnsupportedMedia(
            "The content is not a supported image (JPEG, PNG, WebP, BMP, TIFF) or video (MP4/MOV, MKV, WebM, AVI, MPEG)."
        )
    return info
