"""Label Studio's own labeling page (Chromium, Playwright) showing the predictions our backend made:
the annotator opens a task and sees SAM3's regions, each with its label and score."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.labelstudio.label_studio import IMAGE_CONFIG, PHOTOS, Backend, LabelStudio
from tests.studio.conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.slow
SCREENSHOTS = Path(os.environ.get("STUDIO_SCREENSHOT_DIR", "/tmp/studio-screenshots"))


def test_an_annotator_sees_sam3s_regions_on_the_task(
    label_studio: LabelStudio, sam3_backend: Backend, monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    project = label_studio.create_project("SAM3 in Label Studio", IMAGE_CONFIG)
    [task] = label_studio.import_files(project, PHOTOS / "chelsea.jpg")
    assert label_studio.connect(project, sam3_backend.url, sam3_backend.key).status_code == 201
    [prediction] = label_studio.retrieve_predictions(project, [task["id"]])
    labels = [region["value"]["brushlabels"][0] for region in prediction["result"]]
    assert labels

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop vs pytest-django's checks
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{label_studio.url}/user/login/")
        page.fill("input[name=email]", label_studio.email)
        page.fill("input[name=password]", label_studio.password)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        page.goto(f"{label_studio.url}/projects/{project}/data?task={task['id']}")
        page.get_by_text("sam3", exact=True).wait_for(timeout=60_000)  # the prediction's tab, named by model_version
        listed = "document.body.innerText.split('\\n').filter((line) => line === 'Cat' || line === 'Cup').length"
        page.wait_for_function(f"() => {listed} >= {len(labels)}")
        page.screenshot(path=SCREENSHOTS / "label-studio-predictions.png")
        shown = page.inner_text("body")
        browser.close()
    for label in set(labels):
        assert label in shown
    assert f"{round(prediction['result'][0]['score'], 2):.2f}" in shown  # the regions' scores, as Label Studio prints them
