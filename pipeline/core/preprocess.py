"""Where a frame is resized (and cut into zones): camera/image pixels -> model-sized uint8 RGB.

A camera's zones (``streams[].zones``) are cut out first (:func:`cut_zone`), then each is resized
with its own policy.

Policies (per stream, ``streams[].resize``):

* ``squash``: resize to the model size, ignoring aspect ratio (what the shared model's labels were
  computed with);
* ``center_crop``: scale the short side to the model size, cut the middle;
* ``letterbox``: scale the long side to the model size, pad with black bars.

Downscaling uses ``cv2.INTER_AREA`` (an antialiased average, like PIL's bilinear resize): plain
INTER_LINEAR skips pixels when shrinking 640x480 to 224x224, aliasing fine texture enough to flip the
top-1 label of two of the ten test photographs. Upscaling uses INTER_LINEAR.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.core.config import ZoneConfig
from pipeline.core.errors import ImageError
from pipeline.core.frame import Frame

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _scale(frame: Frame, height: int, width: int) -> Frame:
    shrink = height <= frame.shape[0] and width <= frame.shape[1]
    out = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.asarray(out, dtype=np.uint8)


def resize(frame: Frame, height: int, width: int, policy: str = "squash") -> Frame:
    """Resize an [H, W, 3] uint8 frame to [height, width, 3] with ``policy``."""
    h, w = frame.shape[:2]
    if (h, w) == (height, width):
        return frame
    if policy == "squash":
        return _scale(frame, height, width)
    if policy == "center_crop":
        scale = max(height / h, width / w)
        sh, sw = max(height, round(h * scale)), max(width, round(w * scale))
        scaled = _scale(frame, sh, sw)
        top, left = (sh - height) // 2, (sw - width) // 2
        return np.ascontiguousarray(scaled[top:top + height, left:left + width])
    if policy == "letterbox":
        scale = min(height / h, width / w)
        sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
        scaled = _scale(frame, sh, sw)
        canvas = np.zeros((height, width, 3), dtype=np.uint8)
        top, left = (height - sh) // 2, (width - sw) // 2
        canvas[top:top + sh, left:left + sw] = scaled
        return canvas
    raise ValueError(f"unknown resize policy {policy!r}; use squash, center_crop or letterbox")


def cut_zone(frame: Frame, zone: ZoneConfig) -> Frame:
    """The part of an [H, W, 3] frame that ``zone`` covers: its rectangle, with the outside of a polygon
    painted black (so what lies beside the zone cannot sway its label)."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = zone.box_pixels((w, h))
    cut = frame[y1:y2, x1:x2]
    if zone.polygon is None:
        return cut
    points = np.array([[round(x * w) - x1, round(y * h) - y1] for x, y in zone.polygon], np.int32)
    mask = np.zeros(cut.shape[:2], np.uint8)
    cv2.fillPoly(mask, [points], 255)
    return np.asarray(cv2.bitwise_and(cut, cut, mask=mask), dtype=np.uint8)


def bgr_to_rgb(frame: Frame) -> Frame:
    return np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def read_image_rgb(path: Path) -> Frame:
    """Read an image file as uint8 RGB [H, W, 3]; raise :class:`ImageError` with the reason if not."""
    if not path.is_file():
        raise ImageError(f"image {path} does not exist or is not a file")
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        raise ImageError(f"image {path} is empty (0 bytes)")
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"image {path} cannot be decoded: not a PNG/JPEG/BMP/WebP/TIFF image, or the "
                         "file is truncated")
    return bgr_to_rgb(np.asarray(bgr, dtype=np.uint8))


def collect_images(paths: list[Path]) -> list[Path]:
    """Expand folders into their image files (sorted); keep files as given."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            if not found:
                raise ImageError(f"folder {p} has no images ({', '.join(IMAGE_SUFFIXES)})")
            out.extend(found)
        else:
            out.append(p)
    return out
