"""Camera health from the sampled frames: frozen, dark, blurred and moved cameras, not only dead ones.

A camera that keeps sending the same picture looks live to every check that only asks "are frames
arriving?". Ingest already holds each sampled frame at model size, so a few small statistics per
frame (:class:`FrameStats`, measured on a 56x56 grey thumbnail and the model-size grey picture) tell:

* ``frozen``: the picture does not change beyond encoder noise (mean absolute difference to the
  previous sample, in grey levels, under ``frozen_change``);
* ``dark``: nearly black (mean under ``dark_luma``) or uniform (spread under ``dark_spread``): a lens
  covered, an IR lamp failed;
* ``blurred``: the sharpness (variance of the Laplacian) is under ``blur_floor``, or under
  ``blur_ratio`` of the camera's own sharpness while it was healthy;
* ``moved``: the camera's slowly averaged view (its background) no longer correlates with its
  reference view (correlation under ``moved_correlation``): turned, knocked, re-aimed. The reference is
  the averaged view once the camera was healthy for ``reference_after_s``, and
  :meth:`CameraHealth.accept_view` makes the current view the reference (re-aimed on purpose).

Each condition enters after it held continuously for its ``*_after_s`` and clears after the picture
was good again for ``clear_after_s`` (hysteresis both ways), so one odd frame neither raises nor
clears anything. A dark picture is also flat and unsharp: while ``dark`` holds, ``blurred`` and
``frozen`` are not judged (one cause, one condition).

Pure logic on arrays and times: :class:`CameraHealth` is fed by the ingest service and tested
without cameras.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.core.config import HealthConfig

Condition = Literal["frozen", "dark", "blurred", "moved"]
CONDITIONS: tuple[Condition, ...] = ("frozen", "dark", "blurred", "moved")
THUMB = 56  # the thumbnail's side, in pixels (a quarter of the model's 224: an exact 4x4 box average)
Image = npt.NDArray[np.uint8]
Thumb = npt.NDArray[np.float32]


@dataclass(frozen=True)
class FrameStats:
    """What one sampled frame says about its camera."""

    luma_mean: float  # 0..255
    luma_spread: float  # standard deviation of the grey levels
    sharpness: float  # variance of the Laplacian of the model-size grey picture
    change: float  # mean absolute difference to the previous sample's thumbnail, grey levels (inf: first)
    view_correlation: float  # of the averaged view with the reference view (1: same; nan: no reference yet)


def grey(rgb: Image) -> Image:
    return np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), np.uint8)


def thumbnail(grey_image: Image) -> Thumb:
    return np.asarray(cv2.resize(grey_image, (THUMB, THUMB), interpolation=cv2.INTER_AREA), np.float32)


def correlation(a: Thumb, b: Thumb) -> float:
    """Pearson correlation of two thumbnails (1 for the same view in any lighting; nan when one is flat)."""
    da, db = a.ravel() - a.mean(), b.ravel() - b.mean()
    denom = math.sqrt(float(da @ da) * float(db @ db))
    return float(da @ db) / denom if denom > 1e-6 else math.nan


def _mean_std(image: npt.NDArray[np.integer[Any] | np.floating[Any]]) -> tuple[float, float]:
    mean, std = cv2.meanStdDev(image)  # one pass in C: a tenth of numpy's mean() + std()
    return float(mean[0, 0]), float(std[0, 0])


@dataclass
class _Hysteresis:
    """A condition that enters after ``enter_s`` of bad frames and clears after ``clear_s`` of good ones."""

    enter_s: float
    clear_s: float
    active: bool = False
    since_s: float | None = None  # when it became active (wall clock)
    _streak_from: float | None = None  # when the current run of the opposite verdict began (monotonic)

    def update(self, bad: bool | None, now: float, wall: float) -> bool:
        """Feed one verdict (None: not judged now, e.g. dark hides blurred); return whether it changed."""
        if bad is None or bad == self.active:
            self._streak_from = None
            return False
        if self._streak_from is None:
            self._streak_from = now
        if now - self._streak_from < (self.clear_s if self.active else self.enter_s):
            return False
        self.active, self._streak_from = not self.active, None
        self.since_s = wall if self.active else None
        return True


@dataclass
class CameraHealth:
    """One camera's health conditions, fed every sampled frame (``observe``)."""

    cfg: HealthConfig
    stats: FrameStats | None = None
    reference: Thumb | None = None  # the view the camera should show
    _previous: Thumb | None = None
    _view: Thumb | None = None  # the slowly averaged current view
    _view_at: float | None = None
    _healthy_from: float | None = None  # since when the camera is healthy (to take the first reference)
    _healthy_sharpness: float | None = None  # slow average of the sharpness while healthy
    _conditions: dict[Condition, _Hysteresis] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c = self.cfg
        enter = {"frozen": c.frozen_after_s, "dark": c.dark_after_s, "blurred": c.blurred_after_s,
                 "moved": c.moved_after_s}
        self._conditions = {name: _Hysteresis(enter[name], c.clear_after_s) for name in CONDITIONS}

    @property
    def active(self) -> list[Condition]:
        return [name for name, h in self._conditions.items() if h.active]

    def since(self) -> dict[str, float]:
        """Active condition -> when it became active (Unix seconds)."""
        return {name: h.since_s for name, h in self._conditions.items() if h.active and h.since_s is not None}

    def accept_view(self) -> bool:
        """Make the current view the reference (an operator turned the camera on purpose); clears ``moved``.

        Returns whether ``moved`` was active (so that its clearing is announced like any other)."""
        if self._view is not None:
            self.reference = self._view.copy()
        moved = self._conditions["moved"]
        was = moved.active
        moved.active, moved.since_s = False, None
        return was

    def observe(self, rgb: Image, now: float, wall: float) -> list[tuple[Condition, bool]]:
        """Take one sampled RGB frame at ``now`` (monotonic s); return the conditions that entered or cleared."""
        if not self.cfg.enabled:
            return []
        g = grey(rgb)
        thumb = thumbnail(g)
        change = cv2.norm(thumb, self._previous, cv2.NORM_L1) / thumb.size if self._previous is not None else math.inf
        self._previous = thumb
        view = self._average_view(thumb, now)
        view_corr = correlation(view, self.reference) if self.reference is not None else math.nan
        luma_mean, luma_spread = _mean_std(g)
        laplacian_spread = _mean_std(cv2.Laplacian(g, cv2.CV_16S))[1]  # int16 holds a 3x3 Laplacian of uint8
        self.stats = FrameStats(luma_mean=luma_mean, luma_spread=luma_spread, sharpness=laplacian_spread ** 2,
                                change=float(change), view_correlation=view_corr)
        return list(self._judge(self.stats, now, wall))

    def _average_view(self, thumb: Thumb, now: float) -> Thumb:
        """An exponential average of the view over ``view_average_s``: people and cars pass, the scene stays."""
        if self._view is None or self._view_at is None:
            self._view, self._view_at = thumb.copy(), now
            return self._view
        alpha = 1.0 - math.exp(-max(0.0, now - self._view_at) / self.cfg.view_average_s)
        cv2.accumulateWeighted(thumb, self._view, alpha)  # view += alpha x (thumb - view), in place
        self._view_at = now
        return self._view

    def _judge(self, s: FrameStats, now: float, wall: float) -> Iterator[tuple[Condition, bool]]:
        c = self.cfg
        dark = s.luma_mean < c.dark_luma or s.luma_spread < c.dark_spread
        floor = c.blur_floor
        if self._healthy_sharpness is not None:
            floor = max(floor, c.blur_ratio * self._healthy_sharpness)
        verdicts: dict[Condition, bool | None] = {
            "dark": dark,
            "frozen": None if dark else s.change < c.frozen_change,
            "blurred": None if dark else s.sharpness < floor,
            "moved": None if dark or math.isnan(s.view_correlation) else s.view_correlation < c.moved_correlation,
        }
        for name, bad in verdicts.items():
            if self._conditions[name].update(bad, now, wall):
                yield name, self._conditions[name].active
        if self.active:
            self._healthy_from = None
            return
        if not any(verdicts.values()):  # the sharpness to compare with: from frames that look good themselves
            prev = self._healthy_sharpness
            self._healthy_sharpness = s.sharpness if prev is None else prev + 0.02 * (s.sharpness - prev)
        self._take_reference(now)

    def _take_reference(self, now: float) -> None:
        """The first reference view: the averaged view once the camera was healthy for ``reference_after_s``."""
        if self.reference is not None or self._view is None:
            return
        if self._healthy_from is None:
            self._healthy_from = now
        elif now - self._healthy_from >= self.cfg.reference_after_s:
            self.reference = self._view.copy()


def describe(condition: str, cfg: HealthConfig) -> str:
    """What a condition means, for the log line that says it entered."""
    return {
        "frozen": f"the picture has not changed for {cfg.frozen_after_s:g} s",
        "dark": f"the picture has been nearly black or uniform for {cfg.dark_after_s:g} s",
        "blurred": f"the picture has been unsharp for {cfg.blurred_after_s:g} s",
        "moved": (f"the view has differed from its reference for {cfg.moved_after_s:g} s; if the camera was "
                  "re-aimed on purpose, POST /cameras/<id>/accept-view on the ingest endpoint"),
    }[condition]
