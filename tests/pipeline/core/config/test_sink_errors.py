"""Every sink type's errors name their place and line in the file (the sink types come from the union)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.config import SINK_TYPES, load_config
from pipeline.core.errors import ConfigError

#: sink type -> (a setting it needs, one invalid setting, the message that setting gets)
SINKS: dict[str, tuple[str, str, str]] = {
    "jsonl": ("path: out/results.jsonl", "rotate_mb: 0", "must be > 0"),
    "webhook": ("url: http://127.0.0.1:9/hook", "timeout_s: 0", "must be > 0"),
    "stdout": ("name: console-out", "batch_size: 0", "must be >= 1"),
    "redis": ("stream: vigil:results:copy", "maxlen: 0", "must be >= 1"),
    "events": ("path: out/events.jsonl", "hysteresis: 0", "must be >= 1"),
    "mqtt": ("host: broker.local", "port: 0", "must be >= 1"),
    "plugin": ("factory: 'example.sinks:make'", "claim_idle_s: 0", "must be > 0"),
}


def test_the_table_covers_every_sink_type() -> None:
    assert sorted(SINKS) == sorted(SINK_TYPES), "add the new sink type to SINKS"


@pytest.mark.parametrize("sink_type", SINK_TYPES)
def test_an_invalid_setting_in_any_sink_names_its_place_and_line(tmp_path: Path, sink_type: str) -> None:
    needed, invalid, message = SINKS[sink_type]
    text = ("sinks:\n"
            "  - type: stdout\n"
            "  - type: stdout\n"
            "    name: second\n"
            f"  - type: {sink_type}\n"
            f"    {needed}\n"
            f"    {invalid}\n")
    path = tmp_path / "vigil.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    key = invalid.split(":")[0]
    assert info.value.problems == [f"sinks[2].{key}: {message} (line 7)"]


@pytest.mark.parametrize("sink_type", SINK_TYPES)
def test_a_setting_every_sink_shares_names_its_line(tmp_path: Path, sink_type: str) -> None:
    path = tmp_path / "vigil.yaml"
    path.write_text(f"sinks:\n  - type: stdout\n  - type: {sink_type}\n    batch_size: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "sinks[1].batch_size: must be >= 1 (line 4)" in info.value.problems
