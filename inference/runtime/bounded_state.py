"""Keep a video session's tracking state the same size however long the video is.

transformers' video sessions (concept and interactive) keep, for every frame ever processed:
each object's tracker output (memory features, masks, and the input-size ``high_res_masks``, ~4 MB
per object per frame at 1008 px), a ``{"reverse": bool}`` dict per object, the tracker scores,
the suppressed ids, and lists of unmatched/overlapping frame indices that only ever get counted.
``StateBound.after_frame`` cuts all of that down to what tracking reads again, so that results
stay bit-identical to the unbounded session:

* ``high_res_masks`` of a stored output are read only by the call that produced them (to encode
  that frame's memory), so they are dropped from every stored output.
* Non-conditioning outputs are read as memories ``num_maskmem - 1`` frames and as object pointers
  ``max_object_pointers_in_encoder - 1`` frames back from the frame being tracked. They are kept
  ``window`` frames behind the current frame, and ``window`` frames on both sides of every
  anchor: a prompted frame, or where a recent pass started or ended, because a later pass that
  starts there (the other direction of "both", a resume) reads them.
* Frame-indexed scores and suppressed ids are trimmed the same way.
* ``frames_tracked_per_obj`` is only asked "was frame f tracked?": stored as runs of frames.
* Unmatched/overlap frame lists are only asked their length: stored as counts plus the last few.

Not bounded, because transformers reads all of it: conditioning outputs (the prompted frames, and
in concept tracking one frame in ``recondition_every_nth_frame`` per confidently re-detected
object, every one of whose object pointers later frames attend to) and the per-object entries of
objects still tracked. A new pass that starts away from every anchor, in frames tracked long
before, sees fewer memories than transformers would (they were trimmed); it still runs.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterator, MutableMapping
from typing import Any

ANCHOR_PASSES = 8  # starts/ends of this many recent passes stay anchors
RECENT_FRAME_INDICES = 16  # of counted frame lists, kept for log messages


class TrackedFrames(MutableMapping[int, dict]):
    """``{frame: {"reverse": bool}}`` as runs of consecutive frames with the same direction."""

    def __init__(self, frames: dict[int, dict] | None = None) -> None:
        self._runs: list[list[Any]] = []  # [first, last, reverse], sorted and disjoint
        for frame, value in sorted((frames or {}).items()):
            self[frame] = value

    def _run_of(self, frame: int) -> list[Any] | None:
        return next((run for run in self._runs if run[0] <= frame <= run[1]), None)

    def __contains__(self, frame: object) -> bool:
        return isinstance(frame, int) and self._run_of(frame) is not None

    def __getitem__(self, frame: int) -> dict:
        run = self._run_of(frame)
        if run is None:
            raise KeyError(frame)
        return {"reverse": run[2]}

    def __setitem__(self, frame: int, value: dict) -> None:
        reverse = bool(value.get("reverse", False))
        if frame in self:
            del self[frame]
        for run in self._runs:
            if run[2] == reverse and (run[1] + 1 == frame or run[0] - 1 == frame):
                run[0], run[1] = min(run[0], frame), max(run[1], frame)
                break
        else:
            self._runs.append([frame, frame, reverse])
        self._merge()

    def __delitem__(self, frame: int) -> None:
        run = self._run_of(frame)
        if run is None:
            raise KeyError(frame)
        self._runs.remove(run)
        self._runs += [piece for piece in ([run[0], frame - 1, run[2]], [frame + 1, run[1], run[2]]) if piece[0] <= piece[1]]
        self._runs.sort()

    def _merge(self) -> None:
        self._runs.sort()
        merged: list[list[Any]] = []
        for run in self._runs:
            if merged and merged[-1][2] == run[2] and merged[-1][1] + 1 >= run[0]:
                merged[-1][1] = max(merged[-1][1], run[1])
            else:
                merged.append(run)
        self._runs = merged

    def __iter__(self) -> Iterator[int]:
        for first, last, _ in self._runs:
            yield from range(first, last + 1)

    def __len__(self) -> int:
        return sum(last - first + 1 for first, last, _ in self._runs)


class CountedFrames:
    """A list of frame indices that is only appended to and measured: a count and the last few."""

    def __init__(self, frames: list[int] | None = None) -> None:
        frames = frames or []
        self._count = len(frames)
        self._recent: deque[int] = deque(frames[-RECENT_FRAME_INDICES:], maxlen=RECENT_FRAME_INDICES)

    def append(self, frame: int) -> None:
        self._count += 1
        self._recent.append(frame)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        return iter(self._recent)

    def __repr__(self) -> str:
        return f"<{self._count} frames, last {list(self._recent)}>"


def _counted(mapping: defaultdict) -> None:
    mapping.default_factory = CountedFrames
    for key, frames in list(mapping.items()):
        if isinstance(frames, list):
            mapping[key] = CountedFrames(frames)


class StateBound:
    """Trims one transformers video inference session after each frame (see module doc)."""

    def __init__(self, session: Any, window: int) -> None:
        self.session = session
        self.window = window
        self._pass_anchors: deque[int] = deque(maxlen=2 * ANCHOR_PASSES)
        self._last_frame: int | None = None

    def begin_pass(self, start_frame: int | None) -> None:
        if start_frame is not None:
            self._pass_anchors.append(start_frame)
        self._last_frame = None

    def end_pass(self) -> None:
        if self._last_frame is not None:
            self._pass_anchors.append(self._last_frame)

    def _anchors(self) -> set[int]:
        anchors = set(self._pass_anchors)
        for inputs in (self.session.point_inputs_per_obj, self.session.mask_inputs_per_obj):
            for per_object in inputs.values():
                anchors.update(per_object)
        return anchors

    def _stale(self, frame: int, current: int, reverse: bool, anchors: set[int]) -> bool:
        behind = frame - current if reverse else current - frame
        return behind > self.window and all(abs(frame - anchor) > self.window for anchor in anchors)

    def after_frame(self, frame: int, reverse: bool) -> None:
        self._last_frame = frame
        session, anchors = self.session, self._anchors()
        for per_object in session.output_dict_per_obj.values():
            for kind in ("cond_frame_outputs", "non_cond_frame_outputs"):
                for output in per_object[kind].values():
                    output.pop("high_res_masks", None)
            outputs = per_object["non_cond_frame_outputs"]
            for stale in [f for f in outputs if self._stale(f, frame, reverse, anchors)]:
                del outputs[stale]
        for index, tracked in session.frames_tracked_per_obj.items():
            if not isinstance(tracked, TrackedFrames):
                session.frames_tracked_per_obj[index] = TrackedFrames(tracked)
        for name in ("obj_id_to_tracker_score_frame_wise", "suppressed_obj_ids"):  # concept sessions only
            by_frame = getattr(session, name, {})
            for stale in [f for f in by_frame if self._stale(f, frame, reverse, anchors)]:
                del by_frame[stale]
        for name in ("unmatched_frame_inds", "overlap_pair_to_frame_inds"):
            if isinstance(getattr(session, name, None), defaultdict):
                _counted(getattr(session, name))
