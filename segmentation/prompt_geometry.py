"""One check of prompt coordinates against the picture they are given on, for images and video frames.

Coordinates outside the picture are a common client bug (a wrong scale, swapped axes); they get a
clear 400 ``outside_image`` instead of a silent miss or, with absurd values, a failure later on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sam3site.errors import InvalidInput


def check_prompt_inside(prompt: Mapping[str, Any], width: int, height: int, *, index: int | None = None) -> None:
    """Refuse a prompt whose points, box or exemplar boxes leave the ``width`` x ``height`` picture
    (edges included). ``index`` names the prompt's place in a list, for the message."""
    shapes = [("box", box) for box in prompt.get("boxes", [])]
    if prompt.get("box") is not None:
        shapes.append(("box", prompt["box"]))
    shapes += [("point", point) for point in prompt.get("points", [])]
    for what, values in shapes:
        xs, ys = values[0::2], values[1::2]
        if min(xs) < 0 or min(ys) < 0 or max(xs) > width or max(ys) > height:
            where = f"prompts[{index}]: " if index is not None else ""
            raise InvalidInput(
                f"{where}{what} {list(values)} lies outside the {width}x{height} image.",
                code="outside_image",
                detail={**({"prompt": index} if index is not None else {}), "width": width, "height": height},
            )


def check_prompts_inside(prompts: Sequence[Mapping[str, Any]], width: int, height: int) -> None:
    for index, prompt in enumerate(prompts):
        check_prompt_inside(prompt, width, height, index=index)
