"""What a propagation covers, as legs: planned from a request, and what is left of one to resume.

A leg is one pass over the video in one direction, delivering frames ``first``, ``first ± 1``, …
Every frame of a leg is delivered once, in the leg's order, so the last delivered frame tells
exactly where the leg stopped. Web and worker share this module (web-safe: no model code).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sam3site.errors import Conflict

DIRECTIONS = ("forward", "backward", "both")


@dataclass(frozen=True)
class Leg:
    reverse: bool
    first: int  # the first frame delivered
    max_frames: int | None  # frames after the first one; None: to the end (or the start) of the video

    def end(self, frame_count: int) -> int:
        """The last frame this leg delivers."""
        if self.reverse:
            return 0 if self.max_frames is None else max(0, self.first - self.max_frames)
        return frame_count - 1 if self.max_frames is None else min(frame_count - 1, self.first + self.max_frames)

    def covers(self, frame: int, frame_count: int) -> bool:
        low, high = sorted((self.first, self.end(frame_count)))
        return low <= frame <= high

    def after(self, frame: int, frame_count: int) -> Leg | None:
        """What is left of this leg once ``frame`` has been delivered; None when nothing is."""
        end = self.end(frame_count)
        following = frame - 1 if self.reverse else frame + 1
        if (following < end) if self.reverse else (following > end):
            return None
        return Leg(self.reverse, following, None if self.max_frames is None else abs(end - following))

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def legs_plan(direction: str, start_frame: int, max_frames: int | None) -> list[Leg]:
    """forward: start_frame onwards; backward: start_frame down to 0; both: forward, then backward
    from the frame before start_frame. ``max_frames`` bounds each leg (frames after its first)."""
    legs: list[Leg] = []
    if direction in ("forward", "both"):
        legs.append(Leg(False, start_frame, max_frames))
    if direction == "backward":
        legs.append(Leg(True, start_frame, max_frames))
    if direction == "both" and start_frame > 0:
        legs.append(Leg(True, start_frame - 1, max_frames))
    return legs


def legs_from_json(items: list[Any]) -> list[Leg]:
    return [Leg(bool(item["reverse"]), int(item["first"]), item["max_frames"]) for item in items]


def legs_direction(legs: list[Leg]) -> str:
    kinds = {leg.reverse for leg in legs}
    return "both" if len(kinds) == 2 else ("backward" if kinds == {True} else "forward")


def legs_to_resume(propagation: dict[str, Any], frame_count: int) -> list[Leg]:
    """The legs left of an interrupted or cancelled propagation: the rest of the leg holding its
    last delivered frame, then the legs after it. Only that propagation's own progress counts."""
    if propagation.get("state") not in ("interrupted", "cancelled"):
        raise Conflict("There is no interrupted or cancelled propagation to resume.", code="nothing_to_resume")
    legs = legs_from_json(propagation["legs"]) if propagation.get("legs") else legs_plan(
        propagation["direction"], propagation["start_frame"], propagation.get("max_frames")
    )
    last = propagation.get("last_frame")
    remaining = legs
    if last is not None:
        for index, leg in enumerate(legs):
            if leg.covers(last, frame_count):
                rest = leg.after(last, frame_count)
                remaining = ([rest] if rest is not None else []) + legs[index + 1 :]
                break
    if not remaining:
        raise Conflict("The propagation had already delivered all its frames.", code="nothing_to_resume")
    return remaining
