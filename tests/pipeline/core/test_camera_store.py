"""The camera store's changes on top of the YAML's cameras (the Redis round trip is in the console's tests)."""

from __future__ import annotations

import pytest

from pipeline.core.camera_store import effective_streams, validate_stream
from pipeline.core.config import validate_config
from pipeline.core.errors import ConfigError

YAML = validate_config({"streams": [{"id": "a", "url": "rtsp://h/a"}, {"id": "b", "url": "rtsp://h/b"},
                                    {"id": "c", "url": "rtsp://h/c"}]}, environ={}).streams


def test_changes_replace_remove_and_add_in_order() -> None:
    changes = {"z": {"set": {"id": "z", "url": "rtsp://h/z"}}, "b": {"removed": True},
               "a": {"set": {"id": "a", "url": "rtsp://h/a2", "fps": 2}}, "y": {"set": {"id": "y", "url": "rtsp://h/y"}}}
    streams, problems = effective_streams(list(YAML), changes, environ={})
    assert [(s.id, s.url) for s in streams] == [("a", "rtsp://h/a2"), ("c", "rtsp://h/c"), ("y", "rtsp://h/y"),
                                                ("z", "rtsp://h/z")]
    assert problems == []


def test_a_stored_camera_this_process_cannot_use_leaves_the_yaml_one() -> None:
    changes = {"a": {"set": {"id": "a", "url": "rtsp://${CAM_PW}@h/a"}}}
    streams, [problem] = effective_streams(list(YAML), changes, environ={})
    assert [s.url for s in streams] == ["rtsp://h/a", "rtsp://h/b", "rtsp://h/c"]
    assert problem.startswith("camera 'a' from the camera store: url: environment variable ${CAM_PW} is not set")


def test_a_stream_is_checked_as_the_config_checks_it() -> None:
    with pytest.raises(ConfigError) as info:
        validate_stream({"id": "a", "url": "rtsp://h/a", "fps": 0}, environ={})
    assert info.value.problems == ["fps: must be > 0"]
