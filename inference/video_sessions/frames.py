"""A video's frames, decoded on demand: a long video is never held in memory (or on the GPU) whole."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import numpy as np


class VideoFrames(Sequence[np.ndarray]):
    """``frames[i]`` is frame i as uint8 RGB [H, W, 3].

    Frame positions come from one demux pass (no decoding). A request continues the running
    decoder when it is just ahead of it (forward propagation); otherwise it seeks to the
    preceding keyframe and decodes forward, keeping the decoded frames in a small LRU so a
    backward walk mostly hits the cache.
    """

    def __init__(self, path: Path, *, cache_frames: int = 16) -> None:
        self.path = path
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_frames = cache_frames
        self._lock = threading.Lock()
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.pts is not None and p.size]
        self._pts = sorted(pts for pts, _ in packets)
        self._keyframe_pts = sorted(pts for pts, key in packets if key)
        self._index_of_pts = {pts: index for index, pts in enumerate(self._pts)}
        self._container: av.container.InputContainer | None = None
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._next_index = 0  # index the running decoder yields next

    def __len__(self) -> int:
        return len(self._pts)

    def __getitem__(self, index: int) -> np.ndarray:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)):
            raise TypeError("frame index must be an integer")
        if not 0 <= index < len(self):
            raise IndexError(index)
        with self._lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
            if self._decoder is None or not (self._next_index <= index < self._next_index + 64):
                self._seek(index)
            while True:
                frame = next(self._decoder)  # type: ignore[arg-type]
                position = self._index_of_pts.get(frame.pts) if frame.pts is not None else None
                if position is None:
                    continue
                self._next_index = position + 1
                image = frame.to_ndarray(format="rgb24")
                self._remember(position, image)
                if position >= index:
                    return self._cache.get(index, image)

    def _seek(self, index: int) -> None:
        if self._container is None:
            self._container = av.open(str(self.path))
        stream = self._container.streams.video[0]
        target = self._pts[index]
        keyframe = max((pts for pts in self._keyframe_pts if pts <= target), default=self._pts[0])
        self._container.seek(keyframe, stream=stream, backward=True, any_frame=False)
        self._decoder = self._container.decode(stream)
        self._next_index = self._index_of_pts[keyframe]

    def _remember(self, index: int, image: np.ndarray) -> None:
        self._cache[index] = image
        self._cache.move_to_end(index)
        while len(self._cache) > self._cache_frames:
            self._cache.popitem(last=False)

    def close(self) -> None:
        with self._lock:
            if self._container is not None:
                self._container.close()
            self._container, self._decoder = None, None
            self._cache.clear()
