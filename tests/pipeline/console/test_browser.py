"""The console in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium) against a
real `vigil run` pipeline serving the shared slideshow over RTSP."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from pipeline.core.config import validate_config
from pipeline.ops.runner import LocalPipeline
from tests.fixtures.classifiers import GATE
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


def zone_label(browser: WebDriver, zone: str) -> str:
    """A zone's label on the picture, read in one script (the page redraws the labels at every update)."""
    script = "const s = document.querySelector(`#zone-labels span[data-zone='${arguments[0]}']`); " \
             "return s ? s.textContent : '';"
    return str(browser.execute_script(script, zone))


def test_console_draws_zones_with_their_states_and_a_new_zone_drawn_with_the_mouse(
        tmp_path: Path, gate: tuple[Path, Path, list[Any]], rtsp_factory: Callable[..., RtspServer],
        shared_model: Path, browser: WebDriver) -> None:
    video, head, _ = gate
    server = rtsp_factory({"drive": video})
    cfg = validate_config({
        "streams": [{"id": "drive", "url": server.url("drive"), "fps": 5,
                     "zones": [GATE.model_dump(exclude_none=True)]}],
        "classifiers": [{"id": "gate", "model": str(head), "kind": "state", "classes": ["closed", "open"],
                         "zones": ["gate"], "min_score": 0.8, "confirm": 3}],
        "inference": {"model": str(shared_model), "device": "cpu", "batch_size": 16, "replica_cpus": 0.5,
                      "http_port": 0},
        "sinks": [{"type": "events", "path": str(tmp_path / "events.jsonl")}],
        "metrics": {"port": 0}, "console": {"port": 0, "token": TOKEN}}, environ={})
    with LocalPipeline(cfg, ray_cpus=2) as pipeline:
        assert pipeline.console is not None
        browser.get(f"{pipeline.console.url}#camera=drive")
        wait = WebDriverWait(browser, 90, poll_frequency=0.2)
        # The gate zone is drawn on the picture with its state, and the timeline lists its changes.
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, '#zone-shapes rect[data-zone="gate"]'))
        states_seen: set[str] = set()
        wait.until(lambda b: states_seen.add(zone_label(b, "gate")) or {
            "gate: gate: open", "gate: gate: closed"} <= states_seen)
        timeline = "return [...document.querySelectorAll('#camera-timeline li')].map((li) => li.textContent);"
        wait.until(lambda b: any("gate gate → " in text for text in b.execute_script(timeline)))
        x = browser.execute_script("return document.querySelector(`#zone-shapes rect[data-zone='gate']`)"
                                   ".getAttribute('x');")
        assert float(x) == pytest.approx(GATE.box_xyxy[0], abs=1e-3)
        # Draw a new zone over the left of the street: drag on the picture, name it, save it (with the token).
        browser.find_element(By.ID, "token").send_keys(TOKEN)
        browser.execute_script("document.getElementById('token').dispatchEvent(new Event('change'))")
        browser.find_element(By.ID, "zone-draw").click()
        svg = browser.find_element(By.ID, "zone-shapes")
        left, top, width, height = browser.execute_script(
            "arguments[0].scrollIntoView({block: 'center'}); const r = arguments[0].getBoundingClientRect();"
            "return [r.left, r.top, r.width, r.height];", svg)
        drag = ActionBuilder(browser)  # in the viewport's pixels: from 10%, 10% of the picture to 40%, 60%
        drag.pointer_action.move_to_location(round(left + 0.1 * width), round(top + 0.1 * height)).pointer_down() \
            .move_to_location(round(left + 0.25 * width), round(top + 0.3 * height)) \
            .move_to_location(round(left + 0.4 * width), round(top + 0.6 * height)).pointer_up()
        drag.perform()
        form = browser.find_element(By.ID, "zone-form")
        wait.until(lambda b: form.is_displayed())
        form.find_element(By.NAME, "id").send_keys("road")
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda b: "saved zone road" in b.find_element(By.ID, "zone-result").text)
        view = httpx.get(f"{pipeline.console.url}api/v1/streams/drive", timeout=10).json()
        road = next(z for z in view["zones"] if z["id"] == "road")
        assert road["xyxy"] == pytest.approx([0.1, 0.1, 0.4, 0.6], abs=0.02), road
        # The running camera cuts it at once (no reconnect): its label appears on the picture.
        wait.until(lambda b: zone_label(b, "road").startswith("road: ")
                   and "no result yet" not in zone_label(b, "road"))
        assert pipeline.ingest is not None and pipeline.ingest.cameras["drive"].reconnects == 0
        # Taking the gate zone away from the classifier that runs on it is refused, naming both.
        gone = httpx.put(f"{pipeline.console.url}api/v1/streams/drive/zones", timeout=10,
                         json=[{"id": "road", "xyxy": road["xyxy"]}], headers={"Authorization": f"Bearer {TOKEN}"})
        assert gone.status_code == 422 and "classifiers[0].zones: no camera has a zone 'gate'" in gone.text
        browser.save_screenshot(str(tmp_path / "zones.png"))
