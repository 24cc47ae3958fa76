"""``streams[].zones``: named regions of a camera's picture, each classified on its own.

A zone is a rectangle in fractions of the frame (``xyxy``: left, top, right, bottom, 0..1, so it holds
whatever resolution the camera sends), or a polygon (``polygon``: points in fractions) whose bounding
rectangle is cut out and whose outside is painted black. Each zone has its own ``resize`` policy.
The whole picture is the zone ``full`` unless the camera sets ``full_frame: false``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipeline.core.config.base import ID_PATTERN, Strict

ResizePolicy = Literal["squash", "center_crop", "letterbox"]
#: The zone that stands for the whole picture (``streams[].full_frame``); no configured zone may take it.
FULL_ZONE = "full"
#: A zone's crop must be at least this many pixels wide and high on the camera's real resolution.
MIN_ZONE_PIXELS = 32
#: At most this many zones per camera: each is a `zone` label value of the pipeline's metrics.
MAX_ZONES = 16

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]
Point = tuple[Fraction, Fraction]


class ZoneConfig(Strict):
    """One region of a camera's picture, classified on its own."""

    id: Annotated[str, Field(pattern=ID_PATTERN, description="Unique within the camera; in results and metrics.")]
    xyxy: tuple[Fraction, Fraction, Fraction, Fraction] | None = Field(default=None, description=(
        "The rectangle: left, top, right, bottom as fractions of the frame (0..1)."))
    polygon: Annotated[list[Point] | None, Field(min_length=3, max_length=64, description=(
        "A polygon (points as [x, y] fractions): its bounding rectangle is cut out, its outside painted black. "
        "Instead of xyxy."))] = None
    resize: ResizePolicy = Field(default="squash", description="How the cut-out is fitted to the model's input.")

    @model_validator(mode="after")
    def _one_shape(self) -> ZoneConfig:
        if (self.xyxy is None) == (self.polygon is None):
            raise ValueError(f"zone {self.id!r}: give exactly one of xyxy (a rectangle) or polygon (points)")
        x1, y1, x2, y2 = self.box_xyxy
        if x2 <= x1 or y2 <= y1:
            raise ValueError(f"zone {self.id!r}: zero area ({self.where}); the right edge must be greater than "
                             "the left and the bottom greater than the top, as fractions of the frame")
        return self

    @property
    def box_xyxy(self) -> tuple[float, float, float, float]:
        """The rectangle cut out, in fractions: ``xyxy``, or the polygon's bounding box."""
        if self.xyxy is not None:
            return self.xyxy
        xs, ys = [p[0] for p in self.polygon or ()], [p[1] for p in self.polygon or ()]
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def where(self) -> str:
        return f"xyxy {list(self.xyxy)}" if self.xyxy is not None else f"polygon of {len(self.polygon or ())} points"

    def box_pixels(self, resolution_wh: tuple[int, int]) -> tuple[int, int, int, int]:
        """The rectangle in pixels of a ``resolution_wh`` picture: ``x1, y1, x2, y2`` (x2, y2 exclusive)."""
        w, h = resolution_wh
        x1, y1, x2, y2 = self.box_xyxy
        left, top = min(w - 1, int(x1 * w)), min(h - 1, int(y1 * h))
        return left, top, max(left + 1, round(x2 * w)), max(top + 1, round(y2 * h))

    def size_problem(self, resolution_wh: tuple[int, int]) -> str | None:
        """Why this zone is too small to classify on a ``resolution_wh`` camera, or None."""
        x1, y1, x2, y2 = self.box_pixels(resolution_wh)
        if x2 - x1 >= MIN_ZONE_PIXELS and y2 - y1 >= MIN_ZONE_PIXELS:
            return None
        w, h = resolution_wh
        return (f"zone {self.id!r} ({self.where}) is {x2 - x1}x{y2 - y1} pixels on this camera's {w}x{h} picture, "
                f"smaller than {MIN_ZONE_PIXELS}x{MIN_ZONE_PIXELS}: make it larger")


def zones_problem(zones: list[ZoneConfig], full_frame: bool) -> str | None:
    """What is wrong with a camera's zone list as a whole, or None."""
    ids = [z.id for z in zones]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        return f"zone ids must be unique within a camera; repeated: {', '.join(dupes)}"
    if FULL_ZONE in ids:
        return f"zone id {FULL_ZONE!r} is the whole picture's (streams[].full_frame); name this zone otherwise"
    if len(zones) > MAX_ZONES:
        return f"{len(zones)} zones; at most {MAX_ZONES} per camera"
    if not zones and not full_frame:
        return "full_frame: false needs at least one zone, or the camera publishes nothing"
    return None
