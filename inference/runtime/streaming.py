"""Live video on the loaded SAM3: frames pushed one at a time, memory flat however long the stream.

Uses transformers' streaming inference: sessions built without a video, and one
``model(inference_session=..., frame=...)`` call per pushed frame, for concept tracking (text) and
for the tracker (clicks/boxes), the same two modes as :mod:`.video` and through its session
classes (their prompts, resets and object removal apply unchanged).

Bounded: the preprocessed frames are kept for the last ``keep_frames`` frames only (prompts may
name one of those; tracking itself reads only the current frame), and the tracking state goes
through :class:`.bounded_state.StateBound` after every frame, as in file-backed sessions.

Frame indices are the model's, counted 0, 1, 2... over the frames actually computed: a live
stream drops frames (latest-wins), and the tracker reads its memories by frame distance, so
gaps would cost it memories. The caller maps its own sequence numbers onto these indices.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .engine import Instances
from .loader import LoadedSam3
from .video import ConceptVideoSession, InteractiveVideoSession, LazyFrames

KEEP_FRAMES = 8  # preprocessed frames kept for prompts naming a recent frame


def preprocess(loaded: LoadedSam3, frame: np.ndarray) -> torch.Tensor:
    """A uint8 RGB [H, W, 3] frame as the model's input tensor [3, S, S] (as LazyFrames does it)."""
    processed = loaded.video_processor.video_processor(videos=[frame[np.newaxis]], return_tensors="pt")
    return processed["pixel_values_videos"][0][0].to(dtype=loaded.dtype)


class LiveStream:
    """Concept and interactive tracking over pushed frames; only the model thread touches it."""

    def __init__(
        self, loaded: LoadedSam3, first_frame: np.ndarray, *, keep_history: int | None, keep_frames: int = KEEP_FRAMES
    ) -> None:
        self.loaded = loaded
        self.size = (int(first_frame.shape[0]), int(first_frame.shape[1]))
        self._first = first_frame
        self.keep_history = keep_history
        self.keep_frames = keep_frames
        self.concept: ConceptVideoSession | None = None
        self.interactive: InteractiveVideoSession | None = None
        self.frames_pushed = 0  # model frame indices given out so far
        self._recent: dict[int, torch.Tensor] = {}  # preprocessed, for sessions created mid-stream

    # The session classes need a frame to learn the size from; their own frame store then only
    # receives what is pushed (index 0 is overwritten by the first pushed frame).
    def concept_session(self) -> ConceptVideoSession:
        if self.concept is None:
            self.concept = ConceptVideoSession(self.loaded, [self._first], keep_history=self.keep_history)
            self._seed(self.concept.session.processed_frames)
        return self.concept

    def interactive_session(self) -> InteractiveVideoSession:
        if self.interactive is None:
            self.interactive = InteractiveVideoSession(self.loaded, [self._first], keep_history=self.keep_history)
            self._seed(self.interactive.session.processed_frames)
        return self.interactive

    def _seed(self, frames: Any) -> None:
        for index, tensor in self._recent.items():
            frames[index] = tensor

    def has_frame(self, index: int) -> bool:
        return index in self._recent

    def push(self, frame: np.ndarray) -> tuple[int, list[Instances]]:
        """Track one more frame; its model frame index and each active tracker's objects on it."""
        if frame.shape[:2] != self.size:
            raise ValueError(f"frame is {frame.shape[1]}x{frame.shape[0]}; this stream's frames are {self.size[1]}x{self.size[0]}")
        index = self.frames_pushed
        self.frames_pushed += 1
        tensor = preprocess(self.loaded, frame)
        self._recent[index] = tensor
        for old in [i for i in self._recent if i <= index - self.keep_frames]:
            del self._recent[old]
        parts: list[Instances] = []
        if self.concept is not None and self.concept.prompts:
            parts.append(self._concept_step(self.concept, index, tensor))
        if self.interactive is not None and self.interactive.object_ids:
            parts.append(self._interactive_step(self.interactive, index, tensor))
        for tracker in (self.concept, self.interactive):
            if tracker is not None:
                frames: LazyFrames = tracker.session.processed_frames  # type: ignore[assignment]  # set so by the session classes
                frames[index] = tensor  # an idle tracker keeps it too: a prompt may name this frame
                frames.forget_before(index - self.keep_frames + 1)
        return index, parts

    def _concept_step(self, concept: ConceptVideoSession, index: int, tensor: torch.Tensor) -> Instances:
        with torch.inference_mode():
            output = self.loaded.model(inference_session=concept.session, frame=tensor, frame_idx=index)
        if concept.bound is not None:
            concept.bound.after_frame(index, reverse=False)
        return concept.instances(output)

    def _interactive_step(self, interactive: InteractiveVideoSession, index: int, tensor: torch.Tensor) -> Instances:
        with torch.inference_mode():
            output = self.loaded.tracker(inference_session=interactive.session, frame=tensor, frame_idx=index)
        if interactive.bound is not None:
            interactive.bound.after_frame(index, reverse=False)
        return interactive.frame_instances(output)

    def close(self) -> None:
        self.concept = None
        self.interactive = None
        self._recent.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

