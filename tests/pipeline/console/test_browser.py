"""The console in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium) against a
real `vigil run` pipeline serving the shared slideshow over RTSP."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from pipeline.ops.runner import LocalPipeline
from tests.fixtures.services import RtspServer
from tests.pipeline.ops.test_runner import config

TOKEN = "browser-test-token-0123456789"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    binary, driver = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver")
    assert driver is not None, "chromedriver is missing: apt-get install chromium-driver (bash .ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(arg)
    with webdriver.Chrome(options=options, service=Service(executable_path=driver)) as chrome:
        yield chrome


def card_text(browser: WebDriver, stream_id: str, part: str) -> str:
    found = browser.find_elements(By.CSS_SELECTOR, f'article.camera[data-id="{stream_id}"] .{part}')
    return found[0].text if found else ""


def picture_of(browser: WebDriver, stream_id: str) -> str:
    """The card's picture as the browser shows it (a data URL of its pixels)."""
    script = ("const img = document.querySelector(`article.camera[data-id='${arguments[0]}'] img`);"
              "if (!img || !img.complete || !img.naturalWidth) return '';"
              "const c = document.createElement('canvas'); c.width = img.naturalWidth; c.height = img.naturalHeight;"
              "c.getContext('2d').drawImage(img, 0, 0); return c.toDataURL('image/png');")
    return str(browser.execute_script(script, stream_id))


def test_console_grid_follows_the_slideshow_and_adds_and_removes_cameras(
        tmp_path: Path, rtsp_server: RtspServer, shared_model: Path, video_dir: Path, browser: WebDriver) -> None:
    expected = [s["expected_top1"].split(",")[0]
                for s in json.loads((video_dir / "slideshow.json").read_text())["segments"]]
    base = config([{"id": "slides", "url": rtsp_server.url("slideshow"), "fps": 5}], tmp_path / "r.jsonl",
                  shared_model)
    cfg = base.model_copy(update={"console": base.console.model_copy(update={"token": SecretStr(TOKEN)})})
    with LocalPipeline(cfg, ray_cpus=2) as pipeline:
        assert pipeline.console is not None
        url = pipeline.console.url
        browser.get(url)
        wait = WebDriverWait(browser, 60, poll_frequency=0.2)
        wait.until(lambda b: card_text(b, "slides", "state").startswith("live"))
        wait.until(lambda b: card_text(b, "slides", "label") not in ("", "no result yet"))
        # For 12 s: the label shown follows the segments, in order, and the picture changes.
        shown, pictures, t0 = [], set(), time.monotonic()
        while time.monotonic() - t0 < 12:
            label = card_text(browser, "slides", "label").rsplit(" ", 1)[0]
            if label and (not shown or shown[-1] != label):
                shown.append(label)
            pictures.add(picture_of(browser, "slides"))
            time.sleep(0.25)
        start = expected.index(shown[0])
        assert len(shown) >= 4 and shown == ((expected[start:] + expected[:start]) * 3)[:len(shown)], shown
        assert len(pictures - {""}) >= 5  # a new picture about every second
        # The camera page: its settings (URL redacted), the timeline of label changes, recent results.
        browser.find_element(By.CSS_SELECTOR, 'article.camera[data-id="slides"] h2 a').click()
        wait.until(lambda b: b.find_element(By.ID, "camera").is_displayed()
                   and len(b.find_elements(By.CSS_SELECTOR, "#camera-timeline li")) >= 3)
        assert browser.find_element(By.ID, "camera-id").text == "slides"
        assert rtsp_server.url("slideshow") in browser.find_element(By.ID, "camera-settings").text
        timeline = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#camera-timeline li")]
        assert any("label → " in t for t in timeline) and any("live" in t for t in timeline), timeline
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#camera-results tbody tr")) >= 5)
        browser.get(url)  # back to the grid
        wait.until(lambda b: card_text(b, "slides", "state").startswith("live"))
        # Add a camera through the form (with the token); it goes live in the grid.
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.execute_script("document.getElementById('token').dispatchEvent(new Event('change'))")
        form = browser.find_element(By.ID, "add-form")
        form.find_element(By.NAME, "id").send_keys("bikes")
        form.find_element(By.NAME, "url").send_keys(rtsp_server.url("bikes"))
        form.find_element(By.TAG_NAME, "button").click()
        wait.until(lambda b: "added bikes" in b.find_element(By.ID, "add-result").text)
        wait.until(lambda b: card_text(b, "bikes", "state").startswith("live"))
        assert pipeline.ingest is not None and "bikes" in pipeline.ingest.cameras
        # Remove it with its button: it stops and leaves the grid.
        browser.find_element(By.CSS_SELECTOR, 'article.camera[data-id="bikes"] .remove').click()
        browser.switch_to.alert.accept()
        wait.until(lambda b: not b.find_elements(By.CSS_SELECTOR, 'article.camera[data-id="bikes"]'))
        wait.until(lambda b: "bikes" not in pipeline.ingest.cameras)
        # The API refuses changes without the token, and names the bad field of a bad camera.
        api = f"{url}api/v1/streams"
        assert httpx.post(api, json={"id": "x", "url": "rtsp://h/x"}).status_code == 401
        bad = httpx.post(api, json={"id": "x", "url": "rtsp://h/x", "fps": -1},
                         headers={"Authorization": f"Bearer {TOKEN}"})
        assert bad.status_code == 422 and bad.json()["detail"]["problems"] == ["fps: must be > 0"]
        browser.save_screenshot(str(tmp_path / "console.png"))
