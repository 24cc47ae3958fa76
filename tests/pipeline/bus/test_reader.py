"""The reader side of the bus on a real Redis: fairness, reclaim, dead letters."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from pipeline.bus.reader import FrameConsumer
from pipeline.bus.wire import FrameMessage, encode_frame
from pipeline.core.classification import FrameClassification
from pipeline.core.keys import DEADLETTER_KEY, INFERENCE_GROUP, RESULTS_KEY, frames_key, stats_key
from pipeline.core.model_identity import ModelIdentity
from pipeline.results.record import ResultRecord
from tests.pipeline.options import consumer_options, writer_for


def publish(client: redis.Redis, stream_id: str, n: int, start: int = 0, maxlen: int = 1000) -> list[str]:
    ids = []
    for i in range(start, start + n):
        px = np.full((8, 8, 3), i % 256, np.uint8)
        msg = FrameMessage.whole(stream_id=stream_id, seq=i, capture_ts_ns=1_700_000_000_000_000_000 + i, pixels=px)
        ids.append(client.xadd(frames_key(stream_id), encode_frame(msg), maxlen=maxlen).decode())  # type: ignore[union-attr]
    return ids


def fake_record(d: Any) -> ResultRecord:
    return ResultRecord(stream=d.stream_id, zone="full", seq=0, frame_id=d.entry_id, capture_ts=1.0, inference_ts=2.0,
                        model=ModelIdentity("m", "1"), classification=FrameClassification([], None),
                        queue_ms=0.0, inference_ms=1.0, batch_size=1, replica="t")


def consumer(clean_redis_url: str, name: str, streams: list[str], **kw: Any) -> FrameConsumer:
    return FrameConsumer(consumer_options([clean_redis_url], name, streams, **kw))


def test_batches_are_fair_across_cameras(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    publish(client, "busy", 100)
    publish(client, "quiet", 5)
    with consumer(clean_redis_url, "c1", ["busy", "quiet"]) as c:
        batch = c.read_batch(10, window_s=0.05)
    by_stream = [d.stream_id for d in batch]
    assert len(batch) == 10
    assert by_stream.count("quiet") == 5 and by_stream.count("busy") == 5


def command_calls(client: redis.Redis, command: str) -> int:
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def test_batches_never_exceed_their_size_and_take_turns(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    for stream_id in ("a", "b", "c"):
        publish(client, stream_id, 20)
    with consumer(clean_redis_url, "c1", ["a", "b", "c"]) as c:
        batches = [c.read_batch(4, window_s=0.05) for _ in range(6)]
    assert [len(b) for b in batches] == [4] * 6  # 3 cameras, 4 frames: never 2 from each
    counts = {stream_id: sum(d.stream_id == stream_id for b in batches for d in b) for stream_id in ("a", "b", "c")}
    assert counts == {"a": 8, "b": 8, "c": 8}


def test_one_busy_camera_among_many_fills_a_batch_in_two_reads(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    quiet = [f"quiet-{i}" for i in range(7)]
    publish(client, "busy", 100)
    with consumer(clean_redis_url, "c1", ["busy", *quiet]) as c:
        before = command_calls(client, "evalsha")
        batch = c.read_batch(32, window_s=0.05)
        assert len(batch) == 32 and {d.stream_id for d in batch} == {"busy"}
        # Two rounds, one read per camera asked: a share from each of the 8, then the rest from "busy" alone.
        assert command_calls(client, "evalsha") - before == 8 + 1


def test_window_closes_partial_batch(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    publish(client, "cam", 3)
    with consumer(clean_redis_url, "c1", ["cam"]) as c:
        batch = c.read_batch(64, window_s=0.05)
        assert len(batch) == 3
        assert c.read_batch(64, window_s=0.05, idle_block_s=0.1) == []


def test_an_idle_read_wakes_for_a_frame_of_any_camera_even_with_more_cameras_than_frames_wanted(
        clean_redis_url: str) -> None:
    # 32 cameras, a lane asking for 16 frames: the blocking read must wait on all 32, not on 16 of them
    # (a frame of the others waited for the whole block, and at low rates that made frames old).
    cams = [f"idle-{i:02d}" for i in range(32)]
    client = redis.Redis.from_url(clean_redis_url)
    with consumer(clean_redis_url, "c1", cams) as c:
        c.read_batch(16, window_s=0.0, idle_block_s=0.05)  # the streams exist now: nothing to read
        for stream_id in cams:
            timer = threading.Timer(0.1, publish, (client, stream_id, 1))
            timer.start()
            t0 = time.monotonic()
            got = c.read_batch(16, window_s=0.0, idle_block_s=3.0)
            timer.join()
            assert [d.stream_id for d in got] == [stream_id] and time.monotonic() - t0 < 1.5, stream_id


def test_crashed_consumer_frames_are_reclaimed(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    ids = publish(client, "cam", 6)
    with consumer(clean_redis_url, "doomed", ["cam"]) as dead:
        taken = dead.read_batch(6, window_s=0.05)
        assert len(taken) == 6  # and then it "crashes": no ack
    with consumer(clean_redis_url, "survivor", ["cam"], claim_idle_s=0.05) as c:
        import time

        time.sleep(0.1)
        claimed, dead_count = c.reclaim(100)
        assert dead_count == 0
        assert [d.entry_id for d in claimed] == ids
        assert all(d.deliveries == 2 for d in claimed)
        writer_for(c).write([(d, [fake_record(d)]) for d in claimed])
    assert client.xpending(frames_key("cam"), INFERENCE_GROUP)["pending"] == 0
    assert client.xlen(RESULTS_KEY) == 6


def test_repeatedly_failing_frame_is_dead_lettered_with_reason(clean_redis_url: str) -> None:
    import time

    client = redis.Redis.from_url(clean_redis_url)
    [fid] = publish(client, "cam", 1)
    with consumer(clean_redis_url, "c1", ["cam"], claim_idle_s=0.01, max_deliveries=3) as c:
        [d] = c.read_batch(1, window_s=0.01)
        c.record_failure([d], "RuntimeError: CUDA out of memory")
        for _ in range(2):  # deliveries 2 and 3
            time.sleep(0.03)
            claimed, dead = c.reclaim(10)
            assert len(claimed) == 1 and dead == 0
        time.sleep(0.03)
        claimed, dead = c.reclaim(10)
        assert claimed == [] and dead == 1
    [(_, entry)] = client.xrange(DEADLETTER_KEY)
    assert entry[b"frame_id"].decode() == fid
    assert entry[b"reason"] == b"failed 3 deliveries: RuntimeError: CUDA out of memory"
    assert entry[b"frame_seq"] == b"0"  # the original frame travels with it
    assert client.hget(stats_key("cam"), "dead_lettered") == b"1"
    assert client.xpending(frames_key("cam"), INFERENCE_GROUP)["pending"] == 0


def test_a_frame_answered_meanwhile_is_neither_dead_lettered_nor_counted_twice(clean_redis_url: str) -> None:
    # E.g. a batch reclaimed after a freeze: one copy got its result, the other is then dead-lettered.
    client = redis.Redis.from_url(clean_redis_url)
    publish(client, "cam", 1)
    with consumer(clean_redis_url, "c1", ["cam"]) as c:
        [d] = c.read_batch(1, window_s=0.01)
        writer_for(c).write([(d, [fake_record(d)])])
        assert c.dead_letter(d, "undecodable frame: late copy") is False
    stats = {k.decode(): int(v) for k, v in client.hgetall(stats_key("cam")).items()}
    assert stats.get("inferred") == 1 and stats.get("dead_lettered", 0) == 0
    assert client.xlen(DEADLETTER_KEY) == 0


def test_frames_trimmed_while_pending_count_as_dropped(clean_redis_url: str) -> None:
    import time

    client = redis.Redis.from_url(clean_redis_url)
    publish(client, "cam", 5)
    with consumer(clean_redis_url, "doomed", ["cam"]) as dead:
        assert len(dead.read_batch(5, window_s=0.01)) == 5
    client.xtrim(frames_key("cam"), maxlen=0)
    with consumer(clean_redis_url, "survivor", ["cam"], claim_idle_s=0.01) as c:
        time.sleep(0.03)
        claimed, _ = c.reclaim(10)
    assert claimed == []
    assert client.hget(stats_key("cam"), "dropped_pending") == b"5"
    assert client.xpending(frames_key("cam"), INFERENCE_GROUP)["pending"] == 0


def test_new_streams_are_discovered(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    with consumer(clean_redis_url, "c1", []) as c:
        assert c.read_batch(5, window_s=0.01, idle_block_s=0.01) == []
        publish(client, "late", 2)
        c.discover(every_s=0)
        assert len(c.read_batch(5, window_s=0.01)) == 2


def test_unreachable_redis_is_a_bus_error(tmp_path: Path) -> None:
    from pipeline.core.errors import BusError
    from tests.fixtures.services import free_port

    with pytest.raises(BusError, match="unavailable"), \
            consumer(f"redis://127.0.0.1:{free_port()}/0", "c", ["cam"], socket_timeout_s=0.5):
        pass
