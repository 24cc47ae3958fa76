"""The frame bus against a real redis-server: wire format, pinning, trimming, auth, Redis down."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from pipeline.bus.publisher import BusOptions, FrameBus
from pipeline.bus.wire import FrameMessage, decode_frame, encode_frame
from pipeline.core.config import RedisConfig, VigilConfig
from pipeline.core.errors import BusError, BusUnavailableError, FrameFormatError
from pipeline.core.keys import frames_key
from pipeline.core.redis_clients import pick_shard, shard_identity
from tests.fixtures.services import RedisServer


def bus_options(urls: list[str], **overrides: Any) -> BusOptions:
    """The publisher's options for ``urls``, as the config's defaults give them, with ``overrides``."""
    return replace(BusOptions.from_config(VigilConfig(redis=RedisConfig(urls=urls))), **overrides)


def _frame(stream_id: str = "cam", seq: int = 0, h: int = 224, w: int = 224) -> FrameMessage:
    rng = np.random.default_rng(seq)
    pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return FrameMessage(stream_id=stream_id, seq=seq, capture_ts_ns=1_700_000_000_123_456_789 + seq,
                        pixels=pixels, source_height=480, source_width=640)


def test_raw_roundtrip_is_exact() -> None:
    msg = _frame(seq=7)
    fields = encode_frame(msg, "raw")
    assert len(fields["data"]) == 224 * 224 * 3
    out = decode_frame(fields)
    assert (out.stream_id, out.seq, out.capture_ts_ns) == ("cam", 7, msg.capture_ts_ns)
    assert (out.height, out.width, out.source_height, out.source_width) == (224, 224, 480, 640)
    np.testing.assert_array_equal(out.pixels, msg.pixels)


def test_decode_accepts_str_keys() -> None:
    fields = {k: v for k, v in encode_frame(_frame(), "raw").items()}
    assert decode_frame(fields).seq == 0
    assert decode_frame({k.encode(): v for k, v in fields.items()}).seq == 0


def test_jpeg_is_smaller_and_close_in_rgb_order() -> None:
    # A smooth image with a distinct colour per channel: a swapped R/B would fail the comparison.
    y, x = np.mgrid[0:224, 0:224]
    pixels = np.stack([x, y, np.full_like(x, 40)], axis=-1).astype(np.uint8)
    msg = FrameMessage("cam", 0, 1, pixels)
    fields = encode_frame(msg, "jpeg", jpeg_quality=90)
    assert len(fields["data"]) < 224 * 224 * 3 / 6
    out = decode_frame(fields)
    diff = np.abs(out.pixels.astype(int) - pixels.astype(int))
    assert diff.mean() < 2.0
    assert out.pixels[:, :, 2].mean() == pytest.approx(40, abs=3)


@pytest.mark.parametrize(("change", "message"), [
    ({"v": b"2"}, "wire version 2"),
    ({"data": b"\x00" * 10}, r"expected 224\*224\*3"),
    ({"enc": b"png"}, "unknown encoding"),
    ({"c": b"4"}, "bad geometry"),
    ({"seq": b"x"}, "'seq' is not an integer"),
])
def test_decode_rejects_bad_entries(change: dict[str, bytes], message: str) -> None:
    fields = {**encode_frame(_frame(), "raw"), **change}
    with pytest.raises(FrameFormatError, match=message):
        decode_frame(fields)


def test_decode_rejects_missing_field() -> None:
    fields = encode_frame(_frame(), "raw")
    del fields["ts_ns"]
    with pytest.raises(FrameFormatError, match="no 'ts_ns' field"):
        decode_frame(fields)


def test_encode_rejects_wrong_dtype() -> None:
    with pytest.raises(FrameFormatError, match="uint8"):
        encode_frame(FrameMessage("cam", 0, 0, np.zeros((4, 4, 3), np.float32)))  # type: ignore[arg-type]


def test_shard_identity_ignores_credentials() -> None:
    assert shard_identity("redis://u:secret@10.0.0.5:6380/2") == "10.0.0.5:6380/2"
    assert shard_identity("rediss://:x@cache") == "cache:6379/0"
    assert shard_identity("unix:///run/redis.sock") == "unix:/run/redis.sock"


def test_pinning_is_stable_across_processes_and_moves_few_cameras() -> None:
    idents = ["a:6379/0", "b:6379/0", "c:6379/0"]
    ids = [f"cam-{i}" for i in range(300)]
    here = [pick_shard(s, idents) for s in ids]
    # Another interpreter with a different hash seed must agree (Python's hash() would not).
    code = ("from pipeline.core.redis_clients import pick_shard;"
            f"print([pick_shard(f'cam-{{i}}', {idents!r}) for i in range(300)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", "PATH": ""})
    assert out.stdout.strip() == str(here)
    counts = [here.count(i) for i in range(3)]
    assert min(counts) > 60, counts  # spread over all instances
    grown = [pick_shard(s, [*idents, "d:6379/0"]) for s in ids]
    moved = [(a, b) for a, b in zip(here, grown, strict=True) if a != b]
    assert moved and all(b == 3 for _, b in moved)  # only onto the new instance
    assert len(moved) < 120


def test_publish_reads_back_in_order(redis_server: RedisServer) -> None:
    with FrameBus(bus_options([redis_server.url()], maxlen=100)) as bus:
        for seq in range(5):
            bus.publish(_frame("fb-order", seq))
        entries = redis_server.client().xrange(frames_key("fb-order"))
    msgs = [decode_frame(fields) for _, fields in entries]
    assert [m.seq for m in msgs] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(msgs[3].pixels, _frame("fb-order", 3).pixels)


def test_maxlen_drops_oldest_and_counts_unread(redis_factory: Callable[..., RedisServer]) -> None:
    # Small stream nodes so that approximate trimming (whole nodes only) works at small lengths.
    server = redis_factory(extra_args=["--stream-node-max-entries", "5"])
    client = server.client()
    with FrameBus(bus_options([server.url()], maxlen=10)) as bus:
        for seq in range(40):
            bus.publish(_frame("fb-trim", seq, 8, 8))
        entries = client.xrange(frames_key("fb-trim"))
        seqs = [decode_frame(f).seq for _, f in entries]
        assert 10 <= len(seqs) < 20
        assert seqs == list(range(40 - len(seqs), 40))  # the newest survive, in order
        assert bus.trimmed_unread("fb-trim") == 40 - len(seqs)  # no consumer group: all unread
        assert bus.trimmed_unread("fb-none") == 0  # no such stream yet

        # A consumer group that reads 10 entries and falls behind: the rest trimmed is lost to it.
        key = frames_key("fb-lag")
        client.xgroup_create(key, "inference", id="0", mkstream=True)
        for seq in range(10):
            bus.publish(_frame("fb-lag", seq, 8, 8))
        client.xreadgroup("inference", "c1", {key: ">"}, count=10)
        for seq in range(10, 50):
            bus.publish(_frame("fb-lag", seq, 8, 8))
        length = client.xlen(key)
        assert bus.trimmed_unread("fb-lag") == 50 - length - 10


def test_several_instances_pin_each_camera(redis_factory: Callable[..., RedisServer]) -> None:
    servers = [redis_factory(), redis_factory()]
    urls = [s.url() for s in servers]
    cams = [f"pin-{i}" for i in range(12)]
    with FrameBus(bus_options(urls)) as bus:
        for stream_id in cams:
            bus.publish(_frame(stream_id, 0, 4, 4))
        for stream_id in cams:
            home = bus.shard_index(stream_id)
            assert servers[home].client().xlen(frames_key(stream_id)) == 1
            assert servers[1 - home].client().exists(frames_key(stream_id)) == 0
    assert {bus.shard_index(c) for c in cams} == {0, 1}


def test_password_and_acl_user(redis_factory: Callable[..., RedisServer]) -> None:
    secret = "S3cr3t-bus-pw"
    plain = redis_factory(password=secret)
    acl = redis_factory(password=secret, user="ingest")
    for server in (plain, acl):
        with FrameBus(bus_options([server.url()])) as bus:
            bus.publish(_frame("fb-auth", 0, 4, 4))
        assert server.client().xlen(frames_key("fb-auth")) == 1
    wrong = acl.url().replace(secret, "wrong-pw-123")
    with FrameBus(bus_options([wrong])) as bus:
        with pytest.raises(BusError) as err:
            bus.publish(_frame("fb-auth", 1, 4, 4))
        assert bus.health()[0]["up"] is False
        assert "wrong-pw-123" not in str(bus.health())
    assert "wrong-pw-123" not in str(err.value) and "***" in str(err.value)


def test_tls_with_acl_user(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory(password="Tls-Pw-77", user="ingest", tls=True)
    assert server.url().startswith("rediss://ingest:Tls-Pw-77@")
    with FrameBus(bus_options([server.url()])) as bus:
        bus.publish(_frame("fb-tls", 0, 4, 4))
        assert bus.shard_url("fb-tls").startswith("rediss://ingest:***@")
    assert server.client().xlen(frames_key("fb-tls")) == 1
    plain = server.url().replace("rediss://", "redis://").split("?")[0]  # TLS port, no TLS
    with FrameBus(bus_options([plain], socket_timeout_s=1.0)) as bus, pytest.raises(BusError) as err:
        bus.publish(_frame("fb-tls", 1, 4, 4))
    assert "Tls-Pw-77" not in str(err.value)


def test_redis_down_fails_fast_then_recovers(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory()
    ups: list[tuple[int, bool]] = []
    opts = bus_options([server.url()], socket_timeout_s=1.0, backoff_base_s=0.2, backoff_cap_s=0.5)
    with FrameBus(opts, on_bus_state=lambda i, up: ups.append((i, up))) as bus:
        bus.publish(_frame("fb-down", 0, 4, 4))
        server.stop()
        with pytest.raises(BusError):
            bus.publish(_frame("fb-down", 1, 4, 4))
        t0 = time.monotonic()
        with pytest.raises(BusUnavailableError):  # in backoff: no I/O at all
            bus.publish(_frame("fb-down", 2, 4, 4))
        assert time.monotonic() - t0 < 0.05
        server.start()
        deadline = time.monotonic() + 5
        while True:
            try:
                bus.publish(_frame("fb-down", 3, 4, 4))
                break
            except BusError:
                assert time.monotonic() < deadline, "the bus did not reconnect"
                time.sleep(0.05)
    assert ups == [(0, True), (0, False), (0, True)]
    assert server.client().xlen(frames_key("fb-down")) == 1  # the restarted Redis was empty


def test_a_bus_has_an_explicit_open_closed_state(redis_server: RedisServer) -> None:
    bus = FrameBus(bus_options([redis_server.url()]))
    msg = FrameMessage("fb-state", 0, 1, np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(BusError, match="is new, not open"):
        bus.publish(msg)
    with bus:
        with pytest.raises(BusError, match="is open; make a new FrameBus"):
            bus.__enter__()  # entering twice would have opened a second set of clients
        bus.publish(msg)
    with pytest.raises(BusError, match="is closed, not open"):
        bus.publish(msg)
    with pytest.raises(BusError, match="is closed; make a new FrameBus"):
        bus.__enter__()
