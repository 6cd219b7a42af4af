"""The Label Studio backend's parts that need no Label Studio: the label config, the smart tools'
context in pixels, and the regions written back (polygons, rectangles, video keyframes)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from labelstudio import regions
from labelstudio.label_config import UnsupportedLabelConfig, parse_label_config
from labelstudio.services import prompts_from_context
from sam3site.errors import InvalidInput

CONFIG = """<View>
  <Image name="img" value="$photo"/>
  <PolygonLabels name="outline" toName="img"><Label value="Car" predicted_values="red car, blue car"/><Label value="Tree"/></PolygonLabels>
  <KeyPointLabels name="kp" toName="img" smart="true"><Label value="Car"/></KeyPointLabels>
  <TextArea name="concept" toName="img"/>
  <BrushLabels name="elsewhere" toName="other"><Label value="X"/></BrushLabels>
</View>"""


def test_the_config_names_the_media_key_the_controls_on_it_and_the_phrases_of_each_label() -> None:
    interface = parse_label_config(CONFIG)
    assert (interface.media.tag, interface.media.name, interface.media.value_key) == ("Image", "img", "photo")
    assert [control.name for control in interface.controls] == ["outline", "kp", "concept"]  # not the one on "other"
    outline = interface.control("outline")
    assert outline is not None and [(label.value, label.phrases) for label in outline.labels] == [
        ("Car", ("red car", "blue car")), ("Tree", ("Tree",)),
    ]


@pytest.mark.parametrize(("config", "words"), [
    ("<View><Image name='i' value='$i'/>", "not valid XML"),
    ("<View><Text name='t' value='$t'/></View>", "exactly one <Image> or <Video>"),
    ("<View><Image name='a' value='$a'/><Image name='b' value='$b'/><BrushLabels name='m' toName='a'/></View>", "it has 2"),
    ("<View><Image name='i' value='$i'/><KeyPointLabels name='k' toName='i'/></View>", "no control this backend can answer"),
    ("<View><Video name='v' value='$v'/><RectangleLabels name='r' toName='v'/></View>", "<VideoRectangle>"),
    ('<!DOCTYPE v [<!ENTITY a "aaaa">]><View>&a;</View>', "not valid XML"),  # entities are refused, not expanded
])
def test_a_config_it_cannot_answer_is_refused_with_what_to_change(config: str, words: str) -> None:
    with pytest.raises(UnsupportedLabelConfig) as refused:
        parse_label_config(config)
    assert words in refused.value.message and refused.value.status_code == 400


def test_the_context_in_pixels_clamped_to_the_picture() -> None:
    context = {"result": [
        {"type": "keypointlabels", "is_positive": True, "value": {"x": 25, "y": 50, "keypointlabels": ["Car"]}},
        {"type": "keypointlabels", "is_positive": False, "value": {"x": 100.4, "y": -1, "keypointlabels": ["Car"]}},
        {"type": "rectanglelabels", "value": {"x": 90, "y": 10, "width": 20, "height": 20, "rectanglelabels": ["Tree"]}},
        {"type": "textarea", "value": {"text": ["red", "car"]}},
    ]}
    asked = prompts_from_context(context, 200, 100)
    assert asked.points == [[50, 50], [200, 0]] and asked.point_labels == [1, 0]
    assert asked.box == [180, 10, 200, 30] and asked.label == "Car" and asked.text == "red car"
    video = {"result": [{"type": "videorectangle", "value": {"sequence": [
        {"frame": 2, "enabled": False, "x": 0, "y": 0, "width": 1, "height": 1},
        {"frame": 5, "enabled": True, "x": 50, "y": 50, "width": 10, "height": 20},
    ], "labels": ["Car"]}}]}
    asked = prompts_from_context(video, 200, 100)
    assert (asked.frame, asked.box, asked.label) == (4, [100, 50, 120, 70], "Car")
    assert not prompts_from_context(None, 200, 100).interactive
    with pytest.raises(InvalidInput) as refused:
        prompts_from_context({"result": [{"type": "keypointlabels", "value": {"y": 1}}]}, 200, 100)
    assert refused.value.code == "invalid_context"


def test_polygons_are_the_outer_contours_in_percent() -> None:
    mask = np.zeros((50, 100), np.uint8)
    mask[10:30, 20:60] = 1
    mask[15:20, 30:40] = 0  # a hole: Label Studio polygons have none, the outline stays
    mask[40:45, 80:90] = 1
    control = parse_label_config(CONFIG).control("outline")
    assert control is not None
    found = regions.polygons(control, "Car", mask, 0.9)
    assert [region["value"]["polygonlabels"] for region in found] == [["Car"], ["Car"]]
    filled = np.zeros_like(mask)
    for region in found:
        points = np.array([[x * 100 / 100, y * 50 / 100] for x, y in region["value"]["points"]]).round().astype(np.int32)
        cv2.fillPoly(filled, [points], 1)
    expected = mask.copy()
    expected[15:20, 30:40] = 1
    assert np.array_equal(filled, expected)


def test_a_track_is_a_keyframe_on_every_frame_switched_off_where_the_object_is_gone() -> None:
    control = parse_label_config("<View><Video name='v' value='$v'/><VideoRectangle name='r' toName='v'/></View>").controls[0]
    boxes = {0: None, 1: [0, 0, 32, 24], 2: [32, 24, 64, 48], 3: None, 4: None, 5: [0, 0, 64, 48]}
    region = regions.video_rectangle(control, "Car", boxes, width=64, height=48, frame_count=6, fps=10, score=0.8)
    sequence = region["value"]["sequence"]
    assert [(k["frame"], k["enabled"]) for k in sequence] == [(2, True), (3, True), (4, False), (6, True)]
    assert sequence[1] == {"frame": 3, "enabled": True, "time": 0.2, "x": 50, "y": 50, "width": 50, "height": 50, "rotation": 0}
    assert sequence[2]["x"] == 50 and region["value"]["labels"] == ["Car"] and region["value"]["duration"] == 0.6
