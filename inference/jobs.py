"""What the web sends a model worker, as plain JSON-able data (Celery messages are JSON)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

MASK_FORMATS = ("rle", "polygons", "png", "none")


@dataclass(frozen=True)
class ConceptPrompt:
    """Every instance of a concept: a text phrase and/or exemplar boxes (1 positive, 0 negative)."""

    text: str | None = None
    boxes: list[list[float]] = field(default_factory=list)
    box_labels: list[int] = field(default_factory=list)
    kind: Literal["concept"] = "concept"


@dataclass(frozen=True)
class InteractivePrompt:
    """One object from clicks (1 object, 0 background) and/or a box, through the SAM-style tracker head."""

    points: list[list[float]] = field(default_factory=list)
    point_labels: list[int] = field(default_factory=list)
    box: list[float] | None = None
    multimask: bool = False
    kind: Literal["interactive"] = "interactive"


Prompt = ConceptPrompt | InteractivePrompt


def prompt_from_dict(data: dict[str, Any]) -> Prompt:
    kind = data.get("kind")
    fields = {key: value for key, value in data.items() if key != "kind"}
    return InteractivePrompt(**fields) if kind == "interactive" else ConceptPrompt(**fields)


@dataclass(frozen=True)
class ImageJob:
    request_id: str
    image_path: str
    image_sha256: str
    prompts: list[Prompt]
    threshold: float
    mask_threshold: float = 0.5
    mask_format: str = "rle"
    max_instances: int | None = None
    enqueued_at: float = field(default_factory=time.time)
    deadline: float = 0.0

    def to_message(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ImageJob:
        return cls(**{**message, "prompts": [prompt_from_dict(p) for p in message["prompts"]]})

    @property
    def expired(self) -> bool:
        return self.deadline > 0 and time.time() > self.deadline
