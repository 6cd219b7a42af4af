"""What the web sends a model worker, as plain JSON-able data (Celery messages are JSON)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

MASK_FORMATS = ("rle", "polygons", "png", "none")
# SAM3's processors pad/cut text to 32 CLIP tokens and its text encoder has 32 positions; the
# count includes the start and end markers. Here (not in the runtime) so the web can state it.
TEXT_PROMPT_MAX_TOKENS = 32


def words_in_tokens(tokens: int) -> int:
    """About how many English words fit in ``tokens`` CLIP tokens (about 1.2 tokens a word, plus the 2 markers)."""
    return (tokens - 2) * 5 // 6


def text_prompt_too_long_message(tokens: int, limit: int = TEXT_PROMPT_MAX_TOKENS, *, at_least: bool = False) -> str:
    """The API's words for a text prompt the text encoder cannot read whole (web and worker say the same)."""
    words = words_in_tokens(limit)
    counted = f"at least {tokens}" if at_least else str(tokens)
    return (
        f"The text prompt has {counted} tokens; the text encoder reads at most {limit}, start and end markers"
        f" included (about {words} words). Shorten it to a noun phrase."
    )


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
