"""Wall-clock times as people and other tools read them: ISO 8601 in UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(unix_s: float | None) -> str | None:
    """``1732600000.123`` -> ``"2024-11-26T05:46:40.123Z"``; ``None`` stays ``None``."""
    if unix_s is None:
        return None
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
