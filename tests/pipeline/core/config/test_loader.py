"""Loading a config file: every problem reported with its path and line, secrets never echoed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.config import VigilConfig, load_config, validate_config
from pipeline.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[4]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "vigil.yaml"
    p.write_text(text)
    return p


def problems(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ=environ or {})
    return info.value.problems


def test_example_config_is_valid() -> None:
    cfg = load_config(REPO / "examples" / "vigil.yaml", environ={})
    assert [s.id for s in cfg.streams] == ["front-door", "parking", "lobby-file"]
    assert cfg.streams[0].url.endswith("@192.0.2.10:554/stream1")
    assert "changeme" in cfg.streams[0].url  # ${VAR:-default} applied
    assert cfg.streams[1].keyframes_only and cfg.streams[1].resize == "letterbox"
    assert [s.type for s in cfg.sinks] == ["jsonl", "events", "mqtt"]


def test_defaults_for_empty_file(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""), environ={})
    assert cfg == VigilConfig()
    assert cfg.inference.batch_size == 32 and cfg.redis.urls == []  # vigil run starts one


def test_every_problem_has_path_and_line(tmp_path: Path) -> None:
    text = """streams:
  - id: a
    url: rtsp://h/a
  - id: b
    url: rtsp://h/b
  - id: c
    url: rtsp://h/c
    fps: 0
inference:
  batch_size: 0
"""
    assert problems(tmp_path, text) == [
        "streams[2].fps: must be > 0 (line 8)",
        "inference.batch_size: must be >= 1 (line 10)",
    ]


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    [msg] = problems(tmp_path, "streams:\n  - id: a\n    url: rtsp://h/a\n    resise: squash\n")
    assert msg.startswith("streams[0].resise: unknown key; did you mean 'resize'?")
    assert msg.endswith("(line 4)")
    [top] = problems(tmp_path, "inferance: {}\n")
    assert top.startswith("inferance: unknown key; did you mean 'inference'?")


def test_unset_env_var_is_an_error_and_set_one_substitutes(tmp_path: Path) -> None:
    text = "redis:\n  urls: ['redis://:${REDIS_PW}@127.0.0.1:6379/0']\n"
    [msg] = problems(tmp_path, text)
    assert msg == ("redis.urls[0]: environment variable ${REDIS_PW} is not set (export it, or write "
                   "${REDIS_PW:-default}) (line 2)")
    cfg = load_config(write(tmp_path, text), environ={"REDIS_PW": "s3cret"})
    assert cfg.redis.urls == ["redis://:s3cret@127.0.0.1:6379/0"]



def test_invalid_values_and_types(tmp_path: Path) -> None:
    text = """streams:
  - id: "bad id!"
    url: ""
    resize: stretch
    transport: sctp
redis:
  urls: ["http://127.0.0.1:6379"]
ingest:
  backoff_base_s: 5
  backoff_cap_s: 1
sinks:
  - type: kafka
  - type: jsonl
metrics:
  port: 70000
"""
    got = problems(tmp_path, text)
    joined = "\n".join(got)
    for expected in [
        "streams[0].id: must match",
        "streams[0].url: must not be empty",
        "streams[0].resize: must be one of 'squash', 'center_crop' or 'letterbox'",
        "streams[0].transport: must be one of 'tcp' or 'udp'",
        "redis.urls: 'http://127.0.0.1:6379' must start with redis://",
        "ingest: backoff_cap_s must be >= backoff_base_s",
        "sinks[0]: unknown sink type; must be one of 'jsonl', 'webhook', 'stdout', 'redis', 'events'",
        "sinks[1].path: is required",
        "metrics.port: must be <= 65535",
    ]:
        assert expected in joined, f"missing {expected!r} in:\n{joined}"


def test_duplicate_stream_ids(tmp_path: Path) -> None:
    text = "streams:\n  - {id: a, url: rtsp://h/1}\n  - {id: a, url: rtsp://h/2}\n"
    [msg] = problems(tmp_path, text)
    assert msg.startswith("streams: stream id 'a' is used twice")


def test_secrets_never_appear_in_errors(tmp_path: Path) -> None:
    text = """streams:
  - id: cam
    url: rtsp://admin:hunter2@10.0.0.1/s
    fps: -5
redis:
  urls: ["http://:topsecret@127.0.0.1"]
"""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ={})
    assert "hunter2" not in str(info.value) and "topsecret" not in str(info.value)
    assert "redis.urls: 'http://:***@127.0.0.1' must start with redis://" in str(info.value)


def test_invalid_yaml_points_at_the_line(tmp_path: Path) -> None:
    [msg] = problems(tmp_path, "streams:\n  - id: a\n   url: [unclosed\n")
    assert msg.startswith("(yaml) at line 3")


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        validate_config(["a", "b"], environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_cli_config_check(tmp_path: Path) -> None:
    bad = run_cli("config", "check", str(write(tmp_path, "streams:\n  - {id: a, url: rtsp://h/1, fps: 0}\n")))
    assert bad.returncode == 2
    assert "streams[0].fps: must be > 0 (line 2)" in bad.stderr


def test_cli_unknown_key_and_unset_variable_exit_2(tmp_path: Path) -> None:
    unknown = run_cli("config", "check", str(write(tmp_path, "metrics:\n  prot: 9100\n")))
    assert unknown.returncode == 2
    assert "metrics.prot: unknown key; did you mean 'port'?" in unknown.stderr
    env_file = tmp_path / "env.yaml"
    env_file.write_text("redis:\n  urls: ['redis://:${VIGIL_TEST_UNSET_PW}@127.0.0.1:6379/0']\n")
    unset = run_cli("config", "check", str(env_file))
    assert unset.returncode == 2
    assert "redis.urls[0]: environment variable ${VIGIL_TEST_UNSET_PW} is not set" in unset.stderr


def test_unsupported_camera_schemes_are_rejected_with_the_supported_ones(tmp_path: Path) -> None:
    doc = ("streams:\n  - {id: a, url: 'foo://cam/1'}\n  - {id: b, url: 'ftp://u:secret@h/v.mp4'}\n"
           "  - {id: c, url: 'RTSP://h/ok'}\n  - {id: d, url: /videos/ok.mp4}\n  - {id: e, url: /dev/video0}\n")
    out = run_cli("config", "check", str(write(tmp_path, doc)))
    assert out.returncode == 2
    supported = "use one of rtsp://, rtsps://, http://, https://, file://, a local file path or /dev/videoN"
    assert f"streams[0].url: 'foo://cam/1': unsupported scheme 'foo://'; {supported} (line 2)" in out.stderr
    assert "streams[1].url: 'ftp://u:***@h/v.mp4': unsupported scheme 'ftp://'" in out.stderr
    assert "secret" not in out.stderr and "streams[2]" not in out.stderr and "streams[3]" not in out.stderr
    assert "2 problem(s)" in out.stderr
