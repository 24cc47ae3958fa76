"""Camera health as pure logic: real photographs at model size, turned frozen, dark, blurred or moved."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.core.config import HealthConfig, validate_config
from pipeline.core.preprocess import bgr_to_rgb, resize
from pipeline.ingest.health import CameraHealth, Image

# Short times; "moved" only where a test turns the camera (these scenes cut between photos faster than
# the averaged view of the defaults would, see test_photos_holding_still_...).
FAST = HealthConfig(frozen_after_s=5, dark_after_s=5, blurred_after_s=5, moved_after_s=3600, clear_after_s=2,
                    reference_after_s=5, view_average_s=1)
STEP_S = 0.2  # 5 fps


def photo(images_dir: Path, name: str) -> Image:
    bgr = cv2.imread(str(images_dir / f"{name}.png"))
    assert bgr is not None
    return resize(bgr_to_rgb(np.asarray(bgr, np.uint8)), 224, 224)


def jitter(img: Image, rng: np.random.Generator, sigma: float) -> Image:
    """Sensor or encoder noise on top of a picture."""
    return np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


class Feed:
    """A camera's sampled frames at 5 fps, with the transitions they caused and when."""

    def __init__(self, cfg: HealthConfig = FAST) -> None:
        self.health, self.t = CameraHealth(cfg), 1000.0
        self.events: list[tuple[float, str, bool]] = []

    def run(self, frames: list[Image], seconds: float) -> Feed:
        for i in range(round(seconds / STEP_S)):
            self.t += STEP_S
            for condition, active in self.health.observe(frames[i % len(frames)], self.t, self.t + 1e9):
                self.events.append((self.t, condition, active))
        return self


@pytest.fixture
def photos(images_dir: Path) -> list[Image]:
    return [photo(images_dir, n) for n in ("grace_hopper", "cat", "bird", "parrot", "owl", "kite_and_cold")]


def moving(photos: list[Image], rng: np.random.Generator) -> list[Image]:
    """A lively scene: the photos in turn, each shifted a little frame to frame, with noise."""
    return [jitter(np.roll(p, (i % 7) * 3, axis=1), rng, 3) for p in photos for i in range(10)]


def test_a_still_picture_is_frozen_after_its_time_and_clears_when_it_moves_again(photos: list[Image]) -> None:
    rng = np.random.default_rng(1)
    still = [jitter(photos[0], rng, 0.3) for _ in range(5)]  # a still picture with encoder noise
    feed = Feed().run(moving(photos, rng), 10).run(still, 8)
    froze_at = 1000.0 + 10 + STEP_S  # the first still frame
    [(t_on, name, on)] = feed.events
    # Within its time plus one sample interval (the first still frame only shows its change to the next).
    assert name == "frozen" and on and 5 <= t_on - froze_at <= 5 + STEP_S + 1e-6
    assert feed.health.active == ["frozen"] and "frozen" in feed.health.since()
    feed.run(moving(photos, rng), 4)
    moved_again_at = froze_at + 8
    assert feed.events[-1][1:] == ("frozen", False) and 2 <= feed.events[-1][0] - moved_again_at <= 2 + STEP_S + 1e-6


def test_photos_holding_still_for_2_s_each_are_not_frozen_with_the_defaults(photos: list[Image]) -> None:
    slideshow = [p for p in photos for _ in range(10)]  # like the shared slideshow: 2 s a photo, 5 fps
    feed = Feed(HealthConfig()).run(slideshow, 60)
    assert feed.events == [] and feed.health.active == []


def test_a_covered_lens_is_dark_and_not_also_blurred_or_frozen(photos: list[Image]) -> None:
    rng = np.random.default_rng(2)
    black = [jitter(np.full_like(photos[0], 6), rng, 3) for _ in range(5)]  # near black, sensor noise
    feed = Feed().run(moving(photos, rng), 10).run(black, 7)
    assert [(n, on) for _, n, on in feed.events] == [("dark", True)]
    assert feed.health.stats is not None and feed.health.stats.luma_mean < 20
    feed.run(moving(photos, rng), 3)
    assert feed.health.active == []


def test_a_heavy_blur_is_blurred_from_the_start_by_the_absolute_floor(photos: list[Image]) -> None:
    rng = np.random.default_rng(3)
    blurred = [cv2.GaussianBlur(f, (0, 0), 8) for f in moving(photos, rng)]
    feed = Feed().run(blurred, 7)
    assert [(n, on) for _, n, on in feed.events] == [("blurred", True)]
    feed.run(moving(photos, rng), 3)
    assert feed.health.active == []


def test_a_camera_losing_focus_is_blurred_against_its_own_sharpness(photos: list[Image]) -> None:
    rng = np.random.default_rng(4)
    sharp = moving(photos, rng)
    feed = Feed(FAST.model_copy(update={"blur_floor": 0.0})).run(sharp, 20)  # no absolute floor: only its history
    feed.run([cv2.GaussianBlur(f, (0, 0), 3) for f in sharp], 7)
    assert ("blurred", True) in [(n, on) for _, n, on in feed.events]


def test_a_turned_camera_is_moved_until_its_new_view_is_accepted(photos: list[Image]) -> None:
    rng = np.random.default_rng(5)
    view = [jitter(photos[0], rng, 4) for _ in range(5)]
    turned = [jitter(np.roll(photos[0], 90, axis=1), rng, 4) for _ in range(5)]
    feed = Feed(FAST.model_copy(update={"frozen_after_s": 3600, "moved_after_s": 5})).run(view, 8)  # reference
    assert feed.health.reference is not None and feed.health.active == []
    feed.run(turned, 9)
    assert feed.health.active == ["moved"]
    assert feed.health.stats is not None and feed.health.stats.view_correlation < 0.5
    feed.health.accept_view()
    feed.run(turned, 4)
    assert feed.health.active == [] and feed.health.stats is not None and feed.health.stats.view_correlation > 0.9


def test_one_odd_frame_neither_raises_nor_clears_a_condition(photos: list[Image]) -> None:
    rng = np.random.default_rng(6)
    black = jitter(np.full_like(photos[0], 6), rng, 3)
    feed = Feed().run([*moving(photos, rng)[:29], black], 12)  # one black frame in 30, every 6 s
    assert feed.events == []


def test_disabled_checks_judge_nothing(photos: list[Image]) -> None:
    feed = Feed(HealthConfig(enabled=False)).run([photos[0]], 60)
    assert feed.events == [] and feed.health.stats is None


def test_a_stream_overrides_only_the_health_keys_it_sets() -> None:
    cfg = validate_config({"health": {"frozen_after_s": 20, "dark_after_s": 40},
                           "streams": [{"id": "a", "url": "rtsp://h/a", "health": {"dark_after_s": 10}},
                                       {"id": "b", "url": "rtsp://h/b"}]}, environ={})
    a, b = cfg.streams
    assert (a.health.frozen_after_s, a.health.dark_after_s) == (20, 10)
    assert (b.health.frozen_after_s, b.health.dark_after_s) == (20, 40)
    again = validate_config(cfg.model_dump(mode="json"), environ={})  # a dump (to the replicas) reads the same
    assert again.streams == cfg.streams
    assert math.isclose(HealthConfig().blur_ratio, 0.25)
