"""The camera pictures the console shows: the latest frame, small, as JPEG, a few times a second at most.

Independent of the model's frames (224x224, every sampled frame): a preview is made from the decoded
frame at ``console.preview_width`` (the height keeps the aspect), at most ``console.preview_fps`` per
camera, and kept in Redis with a TTL (:func:`pipeline.core.keys.preview_key`), so it costs little and
a camera that stops delivering soon shows no picture rather than an old one.
"""

from __future__ import annotations

import time

import cv2

from pipeline.core.config import ConsoleConfig
from pipeline.core.frame import Frame
from pipeline.core.preprocess import resize

JPEG_QUALITY = 80


class PreviewMaker:
    """Decides when a camera's next preview is due and encodes it."""

    def __init__(self, cfg: ConsoleConfig) -> None:
        self.enabled = cfg.enabled  # no console: no previews
        self.width = cfg.preview_width
        self.every_s = 1.0 / cfg.preview_fps
        self._last: dict[str, float] = {}  # camera -> time.monotonic() of its last preview

    def due(self, stream_id: str, now_s: float | None = None) -> bool:
        """True (and the camera's clock restarted) when the camera's next preview is due."""
        if not self.enabled:
            return False
        now = time.monotonic() if now_s is None else now_s
        last = self._last.get(stream_id)
        if last is not None and now - last < self.every_s:
            return False
        self._last[stream_id] = now
        return True

    def encode(self, bgr: Frame) -> bytes:
        """``bgr`` at the preview width (never enlarged), as JPEG."""
        h, w = bgr.shape[:2]
        width = min(self.width, w)
        small = resize(bgr, max(1, round(h * width / w)), width)
        ok, buf = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:  # OpenCV fails only on an empty or malformed array, which a decoded frame is not
            raise ValueError(f"JPEG encoding of a {w}x{h} frame failed")
        return bytes(buf.tobytes())

    def forget(self, stream_id: str) -> None:
        self._last.pop(stream_id, None)
