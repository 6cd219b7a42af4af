"""Label Studio's own labeling page (Chromium, Playwright) with our backend connected: the
annotator sees SAM3's pre-annotation on a task, and a click with the smart keypoint tool comes back
as a SAM3 mask that, accepted and submitted, is stored in the annotation."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from pycocotools import mask as coco_mask

from tests.labelstudio.label_studio import IMAGE_CONFIG, PHOTOS, Backend, LabelStudio, decode_with_label_studio
from tests.studio.conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.slow
SCREENSHOTS = Path(os.environ.get("STUDIO_SCREENSHOT_DIR", "/tmp/studio-screenshots"))
CAT = PHOTOS / "chelsea.jpg"  # 300 x 200


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop vs pytest-django's checks
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()


def open_task(browser: Any, label_studio: LabelStudio, project: int, task: int) -> Any:
    """A signed-in annotator's labeling page for ``task``."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(f"{label_studio.url}/user/login/")
    page.fill("input[name=email]", label_studio.email)
    page.fill("input[name=password]", label_studio.password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    page.goto(f"{label_studio.url}/projects/{project}/data?task={task}")
    page.locator("canvas").first.wait_for(timeout=60_000)
    return page


def test_an_annotator_sees_sam3s_regions_on_the_task(label_studio: LabelStudio, sam3_backend: Backend, browser: Any) -> None:
    project = label_studio.create_project("SAM3 pre-annotation", IMAGE_CONFIG)
    [task] = label_studio.import_files(project, CAT)
    assert label_studio.connect(project, sam3_backend.url, sam3_backend.key).status_code == 201
    [prediction] = label_studio.retrieve_predictions(project, [task["id"]])
    labels = [region["value"]["brushlabels"][0] for region in prediction["result"]]
    assert labels

    page = open_task(browser, label_studio, project, task["id"])
    page.get_by_text("sam3", exact=True).wait_for(timeout=60_000)  # the prediction's tab, named by model_version
    listed = "document.body.innerText.split('\\n').filter((line) => line === 'Cat' || line === 'Cup').length"
    page.wait_for_function(f"() => {listed} >= {len(labels)}")
    page.screenshot(path=SCREENSHOTS / "label-studio-predictions.png")
    shown = page.inner_text("body")
    page.close()
    for label in set(labels):
        assert label in shown
    assert f"{round(prediction['result'][0]['score'], 2):.2f}" in shown  # the regions' scores, as Label Studio prints them


def test_a_smart_click_comes_back_as_a_sam3_mask_and_is_kept(label_studio: LabelStudio, sam3_backend: Backend, browser: Any) -> None:
    answer = label_studio.api("POST", "/api/projects", json={
        "title": "SAM3 clicks", "label_config": IMAGE_CONFIG, "show_collab_predictions": False,  # start from an empty annotation
    })
    project = answer.json()["id"]
    [task] = label_studio.import_files(project, CAT)
    assert label_studio.connect(project, sam3_backend.url, sam3_backend.key).status_code == 201

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page = open_task(browser, label_studio, project, task["id"])
    page.get_by_text("Auto-Annotation").click()
    # The smart tools sit in a flyout that opens on a long press; its buttons are in the page, hidden:
    # a click event on the smart keypoint button selects it as the flyout would.
    page.evaluate("() => document.querySelector('.lsf-toolbar__smart [aria-label=key-point-tool]').click()")
    page.get_by_text("Cat", exact=True).nth(1).click()  # the KeyPointLabels' "Cat" (the brush's comes first)
    picture = page.locator("canvas").first.bounding_box()
    with page.expect_response(lambda response: "interactive-annotating" in response.url) as interactive:
        page.mouse.click(picture["x"] + picture["width"] * 0.5, picture["y"] + picture["height"] * 0.45)
    sent = json.loads(interactive.value.request.post_data)
    answered = interactive.value.json()["data"]
    page.get_by_text("1 suggestions").wait_for()
    page.screenshot(path=SCREENSHOTS / "label-studio-click.png")

    # What the frontend sent is the smart tool's region; what came back is our REST API's mask for that point.
    [click] = sent["context"]["result"]
    assert click["type"] == "keypointlabels" and click["value"]["keypointlabels"] == ["Cat"] and click["is_positive"]
    point = [click["value"]["x"] * 300 / 100, click["value"]["y"] * 200 / 100]
    ours = requests.post(
        f"{sam3_backend.server.url}/api/v1/segment/", headers={"X-API-Key": sam3_backend.key},
        files={"file": (CAT.name, CAT.read_bytes())}, data={"prompts": json.dumps([{"points": [point], "point_labels": [1]}])}, timeout=60,
    ).json()["results"][0]["instances"][0]["mask"]
    [region] = answered["result"]
    [shown] = decode_with_label_studio([region["value"]["rle"]], [(200, 300)])
    assert np.array_equal(shown, coco_mask.decode({"size": ours["size"], "counts": ours["counts"].encode()}))

    # Accepted and submitted, the mask is the annotation Label Studio keeps.
    page.get_by_test_id("bottombar-accept-suggestions-button").click()
    with page.expect_response(lambda response: "/annotations" in response.url and response.request.method == "POST") as saved:
        page.get_by_role("button", name="Submit").click()
    assert saved.value.status == 201
    page.close()
    [annotation] = label_studio.api("GET", f"/api/tasks/{task['id']}/annotations/").json()
    brushes = [item for item in annotation["result"] if item["type"] == "brushlabels"]
    assert [brush["value"]["rle"] for brush in brushes] == [region["value"]["rle"]]
    assert brushes[0]["value"]["brushlabels"] == ["Cat"]
