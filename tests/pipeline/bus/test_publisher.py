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
from pipeline.bus.wire import FrameMessage, ZoneCrop, decode_frame, encode_frame
from pipeline.core.config import RedisConfig, VigilConfig
from pipeline.core.errors import BusError, BusUnavailableError, FrameFormatError
from pipeline.core.keys import INFERENCE_GROUP, frames_key, stats_key
from pipeline.core.redis_clients import pick_shard, shard_identity
from tests.fixtures.services import RedisServer


def bus_options(urls: list[str], **overrides: Any) -> BusOptions:
    """The publisher's options for ``urls``, as the config's defaults give them, with ``overrides``."""
    return replace(BusOptions.from_config(VigilConfig(redis=RedisConfig(urls=urls))), **overrides)


def _frame(stream_id: str = "cam", seq: int = 0, h: int = 224, w: int = 224) -> FrameMessage:
    rng = np.random.default_rng(seq)
    pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return FrameMessage.whole(stream_id=stream_id, seq=seq, capture_ts_ns=1_700_000_000_123_456_789 + seq,
                        pixels=pixels, source_height=480, source_width=640)


def test_raw_roundtrip_is_exact() -> None:
    msg = _frame(seq=7)
    fields = encode_frame(msg, "raw")
    assert len(fields["data"]) == 224 * 224 * 3
    out = decode_frame(fields)
    assert (out.stream_id, out.seq, out.capture_ts_ns) == ("cam", 7, msg.capture_ts_ns)
    assert (out.height, out.width, out.source_height, out.source_width) == (224, 224, 480, 640)
    np.testing.assert_array_equal(out.crop(), msg.crop())


def test_decode_accepts_str_keys() -> None:
    fields = {k: v for k, v in encode_frame(_frame(), "raw").items()}
    assert decode_frame(fields).seq == 0
    assert decode_frame({k.encode(): v for k, v in fields.items()}).seq == 0


def test_jpeg_is_smaller_and_close_in_rgb_order() -> None:
    # A smooth image with a distinct colour per channel: a swapped R/B would fail the comparison.
    y, x = np.mgrid[0:224, 0:224]
    pixels = np.stack([x, y, np.full_like(x, 40)], axis=-1).astype(np.uint8)
    msg = FrameMessage.whole("cam", 0, 1, pixels)
    fields = encode_frame(msg, "jpeg", jpeg_quality=90)
    assert len(fields["data"]) < 224 * 224 * 3 / 6
    out = decode_frame(fields)
    diff = np.abs(out.crop().astype(int) - pixels.astype(int))
    assert diff.mean() < 2.0
    assert out.crop()[:, :, 2].mean() == pytest.approx(40, abs=3)


@pytest.mark.parametrize(("change", "message"), [
    ({"v": b"3"}, "wire version 3"),
    ({"data": b"\x00" * 10}, r"expected 1 crop\(s\) of 224\*224\*3"),
    ({"zones": b"full,gate"}, r"expected 2 crop\(s\)"),
    ({"enc": b"jpeg", "sizes": b"5,x"}, "not a list of integers"),
    ({"enc": b"jpeg", "sizes": b"0,%d" % (224 * 224 * 3)}, "do not split"),  # crafted: never OpenCV's own error
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
        encode_frame(FrameMessage.whole("cam", 0, 0, np.zeros((4, 4, 3), np.float32)))  # type: ignore[arg-type]


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


def _zoned(stream_id: str, seq: int, zones: tuple[str, ...]) -> FrameMessage:
    crops = tuple(ZoneCrop(z, np.full((8, 8, 3), (seq + i) % 256, np.uint8)) for i, z in enumerate(zones))
    return FrameMessage(stream_id, seq, 1_700_000_000_000_000_000 + seq, crops)


def test_zones_travel_in_one_entry_raw_and_jpeg() -> None:
    rng = np.random.default_rng(1)
    crops = tuple(ZoneCrop(z, np.ascontiguousarray(np.repeat(np.repeat(
        rng.integers(0, 256, (7, 7, 3), dtype=np.uint8), 32, 0), 32, 1))) for z in ("full", "gate", "bay-2"))
    msg = FrameMessage("cam", 4, 1_700_000_000_000_000_000, crops, source_height=1080, source_width=1920)
    raw = decode_frame(encode_frame(msg, "raw"))
    assert raw.zones == ("full", "gate", "bay-2") and (raw.source_width, raw.source_height) == (1920, 1080)
    for c in crops:
        np.testing.assert_array_equal(raw.crop(c.zone), c.pixels)
    jpeg = decode_frame(encode_frame(msg, "jpeg", jpeg_quality=95))
    assert jpeg.zones == raw.zones
    for c in crops:
        assert np.abs(jpeg.crop(c.zone).astype(int) - c.pixels.astype(int)).mean() < 3
    with pytest.raises(KeyError, match="no zone 'door'"):
        raw.crop("door")


def test_a_version_1_entry_reads_as_the_whole_picture() -> None:
    px = np.full((4, 4, 3), 7, np.uint8)
    fields = {"v": b"1", "stream": b"cam", "seq": b"3", "ts_ns": b"5", "h": b"4", "w": b"4", "c": b"3",
              "src_h": b"0", "src_w": b"0", "enc": b"raw", "data": px.tobytes()}
    msg = decode_frame(fields)
    assert msg.zones == ("full",) and msg.seq == 3
    np.testing.assert_array_equal(msg.crop(), px)


def test_publish_reads_back_in_order(redis_server: RedisServer) -> None:
    with FrameBus(bus_options([redis_server.url()], maxlen=100)) as bus:
        for seq in range(5):
            bus.publish(_frame("fb-order", seq))
        entries = redis_server.client().xrange(frames_key("fb-order"))
    msgs = [decode_frame(fields) for _, fields in entries]
    assert [m.seq for m in msgs] == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(msgs[3].crop(), _frame("fb-order", 3).crop())


def test_maxlen_evicts_the_oldest_unread_and_counts_them_per_zone(redis_server: RedisServer) -> None:
    client = redis_server.client()
    stats = stats_key("fb-trim")
    zones = ("full", "gate")
    with FrameBus(bus_options([redis_server.url()], maxlen=16)) as bus:
        for seq in range(40):
            bus.publish(_zoned("fb-trim", seq, zones))
        seqs = [decode_frame(f).seq for _, f in client.xrange(frames_key("fb-trim"))]
        assert 16 <= len(seqs) <= 17  # never more than maxlen and a sixteenth
        assert seqs == list(range(40 - len(seqs), 40))  # the newest survive, in order
        assert bus.evicted("fb-trim") == 40 - len(seqs)  # no consumer group: every one unread
        counts = {k.decode(): int(v) for k, v in client.hgetall(stats).items()}  # type: ignore[union-attr]
        for zone in zones:
            assert counts[f"published@{zone}"] == 40 and counts[f"evicted@{zone}"] == 40 - len(seqs)
        assert bus.evicted("fb-none") == 0  # no such stream yet

        # A replica read 10 frames and fell behind: of what is trimmed, only what it had not read is evicted.
        key = frames_key("fb-lag")
        client.xgroup_create(key, INFERENCE_GROUP, id="0", mkstream=True)
        for seq in range(10):
            bus.publish(_frame("fb-lag", seq, 8, 8))
        client.xreadgroup(INFERENCE_GROUP, "c1", {key: ">"}, count=10)
        for seq in range(10, 50):
            bus.publish(_frame("fb-lag", seq, 8, 8))
        kept = [decode_frame(f).seq for _, f in client.xrange(key)]
        assert kept == list(range(50 - len(kept), 50)) and 16 <= len(kept) <= 17
        assert bus.evicted("fb-lag") == 50 - len(kept) - 10
        # What waits is what is there (Redis' lag still counts the evicted frames; the queue state does not).
        assert bus.queue_state(["fb-lag"])["fb-lag"][0] == len(kept)
        client.xreadgroup(INFERENCE_GROUP, "c1", {key: ">"}, count=1)
        assert bus.queue_state(["fb-lag"])["fb-lag"][0] == len(kept) - 1


def test_a_frame_stuck_pending_does_not_make_a_camera_that_keeps_up_lose_frames(redis_server: RedisServer) -> None:
    """Answered frames wait behind a pending one (they are trimmed only up to it): trimming them evicts nothing."""
    client = redis_server.client()
    key = frames_key("fb-stuck")
    client.xgroup_create(key, INFERENCE_GROUP, id="0", mkstream=True)
    with FrameBus(bus_options([redis_server.url()], maxlen=16)) as bus:
        bus.publish(_frame("fb-stuck", 0, 8, 8))
        client.xreadgroup(INFERENCE_GROUP, "stuck", {key: ">"}, count=1)  # never answered
        for seq in range(1, 200):
            bus.publish(_frame("fb-stuck", seq, 8, 8))
            for _, entries in client.xreadgroup(INFERENCE_GROUP, "live", {key: ">"}, count=10):  # keeps up
                client.xack(key, INFERENCE_GROUP, *[e for e, _ in entries])
        assert bus.evicted("fb-stuck") == 0
        assert client.xlen(key) <= 17  # bounded all the same


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
    msg = FrameMessage.whole("fb-state", 0, 1, np.zeros((4, 4, 3), np.uint8))
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
