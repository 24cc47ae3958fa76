"""The live table of `vigil run` / `vigil demo`: one row per camera, fitted to the terminal's width.

Columns give way from the least needed (``stale``, ``dead``, ``fps in``, ``sampling``, ...) until the
table fits; ``camera`` and the last column shorten with an ellipsis. The last column is the newest
result, or, while a camera is not live, why (its last error).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

from pipeline.ops.runner import CameraRow

LAST_HEADER = "last result / error"
LAST_MIN_WIDTH = 16  # never narrower
LAST_WANTED_WIDTH = 28  # other columns go until the last one has this much room (or all it needs)
CAMERA_MAX_WIDTH = 24  # a longer camera id is shortened with an ellipsis


@dataclass(frozen=True)
class Column:
    header: str
    drop_order: int  # 0: never dropped; higher numbers go first on a narrow terminal
    value: Callable[[CameraRow], str]
    right: bool = True


def _age(r: CameraRow) -> str:
    return f"{r.age_p95_s * 1000:.0f} ms" if r.age_p95_s is not None else "-"


def _sampling(r: CameraRow) -> str:
    effective, configured = r.sampling_fps
    return f"{effective:g}/{configured:g}"


COLUMNS = (
    Column("camera", 0, lambda r: r.stream_id, right=False),
    Column("state", 0, lambda r: r.state, right=False),
    Column("health", 5, lambda r: ",".join(r.health) or "ok", right=False),
    Column("sampling", 6, _sampling),
    Column("fps in", 7, lambda r: f"{r.fps_in:.1f}"),
    Column("fps out", 3, lambda r: f"{r.fps_out:.1f}"),
    Column("age p95", 2, _age),
    Column("dropped", 4, lambda r: str(r.dropped)),
    Column("stale", 8, lambda r: str(r.stale)),
    Column("dead", 9, lambda r: str(r.dead_lettered)),
)


def _last(r: CameraRow) -> Text:
    if r.state != "live" and r.error:
        return Text(r.error, style="red")
    return Text(r.last_result)


def _last_width(rows: list[CameraRow]) -> int:
    return max([len(LAST_HEADER), *(len(_last(r)) for r in rows)])


def _width(column: Column, rows: list[CameraRow]) -> int:
    widest = max([len(column.header), *(len(column.value(r)) for r in rows)])
    return min(widest, CAMERA_MAX_WIDTH) if column.header == "camera" else widest


def _room_left(columns: list[Column], rows: list[CameraRow], width: int) -> int:
    """What is left for the last column: each column takes its width plus 3 (padding and a border), the
    last column 3 more and the closing border 1."""
    return width - sum(_width(c, rows) + 3 for c in columns) - 4


def choose_columns(rows: list[CameraRow], width: int) -> list[Column]:
    """The columns that fit ``width``, dropping the highest ``drop_order`` first."""
    wanted = max(LAST_MIN_WIDTH, min(LAST_WANTED_WIDTH, _last_width(rows)))
    columns = list(COLUMNS)
    for victim in sorted((c for c in COLUMNS if c.drop_order), key=lambda c: -c.drop_order):
        if _room_left(columns, rows, width) >= wanted:
            break
        columns.remove(victim)
    return columns


def live_table(rows: list[CameraRow], title: str, width: int) -> Table:
    """The table for ``rows`` in ``width`` columns of terminal: every column at its width, the last one
    taking what is left, so the whole table (borders included) is never wider than ``width``."""
    t = Table(title=title, expand=False, title_justify="left")
    columns = choose_columns(rows, width)
    for c in columns:
        w = _width(c, rows)
        t.add_column(c.header, justify="right" if c.right else "left", no_wrap=True, overflow="ellipsis",
                     min_width=w, max_width=w)
    last = max(LAST_MIN_WIDTH, min(_room_left(columns, rows, width), _last_width(rows)))
    t.add_column(LAST_HEADER, no_wrap=True, overflow="ellipsis", min_width=last, max_width=last)
    for r in rows:
        t.add_row(*(c.value(r) for c in columns), _last(r))
    return t
