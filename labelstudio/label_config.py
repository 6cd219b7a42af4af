"""What a Label Studio labeling config asks of the model: the media tag and the control tags on it.

Only the tags this backend answers are read (docs/label-studio.md lists the configs that work):
objects ``Image`` and ``Video``; controls ``BrushLabels``, ``PolygonLabels``, ``RectangleLabels``
(answers, or prompts when smart), ``KeyPointLabels`` (clicks), ``TextArea`` (a free-text concept),
``VideoRectangle`` with ``Labels`` (video tracking).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

from defusedxml import ElementTree
from defusedxml.common import DefusedXmlException

from sam3site.errors import InvalidInput

MAX_CONFIG_CHARS = 200_000
OBJECT_TAGS = ("Image", "Video")
CONTROL_TAGS = ("BrushLabels", "PolygonLabels", "RectangleLabels", "KeyPointLabels", "TextArea", "VideoRectangle", "Labels")
MASK_CONTROLS = ("BrushLabels", "PolygonLabels")


class UnsupportedLabelConfig(InvalidInput):
    code = "unsupported_label_config"


@dataclass(frozen=True)
class Label:
    value: str
    phrases: tuple[str, ...]  # what SAM3 is asked for: ``predicted_values`` (comma-separated) or the value


@dataclass(frozen=True)
class Control:
    tag: str
    name: str
    to_name: str
    labels: tuple[Label, ...] = ()

    @property
    def result_type(self) -> str:  # Label Studio's result ``type``: the tag's name in lower case
        return self.tag.lower()


@dataclass(frozen=True)
class MediaObject:
    tag: str  # "Image" or "Video"
    name: str
    value_key: str  # the task data key named by ``value="$key"``


@dataclass(frozen=True)
class LabelingInterface:
    media: MediaObject
    controls: tuple[Control, ...] = field(default_factory=tuple)

    def controls_of(self, *tags: str) -> list[Control]:
        return [control for control in self.controls if control.tag in tags]

    def control(self, name: str) -> Control | None:
        return next((control for control in self.controls if control.name == name), None)

    def label(self, value: str) -> Label | None:
        return next((label for control in self.controls for label in control.labels if label.value == value), None)


def _label(element: Element) -> Label | None:
    value = element.get("value")
    if not value:
        return None
    predicted = [phrase.strip() for phrase in (element.get("predicted_values") or "").split(",") if phrase.strip()]
    return Label(value, tuple(predicted) or (value,))


def parse_label_config(text: str) -> LabelingInterface:
    """The media object and the controls on it; UnsupportedLabelConfig names what is missing."""
    if not text or len(text) > MAX_CONFIG_CHARS:
        raise UnsupportedLabelConfig(f"The labeling config is empty or longer than {MAX_CONFIG_CHARS} characters.")
    try:
        root = ElementTree.fromstring(text)
    except (ElementTree.ParseError, DefusedXmlException) as error:
        raise UnsupportedLabelConfig(f"The labeling config is not valid XML: {error}.") from None
    media = [element for element in root.iter() if element.tag in OBJECT_TAGS]
    if len(media) != 1 or not (media[0].get("value") or "").startswith("$") or not media[0].get("name"):
        raise UnsupportedLabelConfig(
            "The labeling config needs exactly one <Image> or <Video> with a name and value=\"$<data key>\"; "
            f"it has {len(media)}."
        )
    obj = MediaObject(media[0].tag, media[0].get("name", ""), media[0].get("value", "")[1:])
    controls = tuple(
        Control(
            element.tag, element.get("name", ""), element.get("toName", ""),
            tuple(label for child in element if child.tag == "Label" and (label := _label(child)) is not None),
        )
        for element in root.iter()
        if element.tag in CONTROL_TAGS and element.get("toName") == obj.name and element.get("name")
    )
    answers = ("VideoRectangle",) if obj.tag == "Video" else (*MASK_CONTROLS, "RectangleLabels")
    if not any(control.tag in answers for control in controls):
        raise UnsupportedLabelConfig(
            f"The labeling config has no control this backend can answer on <{obj.tag} name=\"{obj.name}\">: "
            f"add one of {', '.join(f'<{tag}>' for tag in answers)} with toName=\"{obj.name}\"."
        )
    return LabelingInterface(obj, controls)
