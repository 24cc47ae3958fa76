"""The inference loop with the real model on a real Redis: labels, poison entries, failing batches."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from pipeline.bus.reader import FrameConsumer
from pipeline.bus.wire import FrameMessage, encode_frame
from pipeline.core.bus_layout import BusLayout
from pipeline.core.config import InferenceConfig
from pipeline.core.keys import DEADLETTER_KEY, INFERENCE_GROUP, RESULTS_KEY, frames_key, stats_key
from pipeline.core.model_identity import ModelIdentity
from pipeline.core.preprocess import read_image_rgb, resize
from pipeline.inference.loop import InferenceLoop, LoopOptions
from pipeline.inference.providers import usable_cpus
from pipeline.inference.runtime import ModelRuntime, RuntimeOptions
from pipeline.results.record import ResultRecord
from tests.fixtures.services import RedisServer
from tests.pipeline.options import consumer_options, loop_options, writer_for


@pytest.fixture(scope="module")
def runtime(shared_model: Path) -> Iterator[ModelRuntime]:
    with ModelRuntime(shared_model, RuntimeOptions(device="cpu", batch_size=8)) as rt:
        yield rt


def publish_photos(client: redis.Redis, stream_id: str, images_dir: Path, names: list[str], encoding: str) -> None:
    for i, name in enumerate(names):
        px = resize(read_image_rgb(images_dir / name), 224, 224)
        msg = FrameMessage.whole(stream_id=stream_id, seq=i, capture_ts_ns=time.time_ns(), pixels=px)
        client.xadd(frames_key(stream_id), encode_frame(msg, encoding, 95))  # type: ignore[arg-type]


def drain(loop: InferenceLoop, expected: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    done = 0
    while done < expected and time.monotonic() < deadline:
        done += loop.step()
    assert done == expected


def test_results_carry_expected_labels(clean_redis_url: str, runtime: ModelRuntime, images_dir: Path,
                                       expected_images: dict[str, Any]) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    names = list(expected_images)
    publish_photos(client, "raw-cam", images_dir, names, "raw")
    publish_photos(client, "jpeg-cam", images_dir, names[:5], "jpeg")
    opts = consumer_options([clean_redis_url], "r1", ["raw-cam", "jpeg-cam"])
    with FrameConsumer(opts) as c:
        loop = InferenceLoop(runtime, c, writer_for(c), loop_options(batch_size=8, batch_window_s=0.01, replica="r1"))
        drain(loop, 15)
    records = [ResultRecord.from_fields(f) for _, f in client.xrange(RESULTS_KEY)]
    raw = sorted((r for r in records if r.stream == "raw-cam"), key=lambda r: r.seq)
    assert [r.top1 for r in raw] == [expected_images[n]["top1_label"] for n in names]
    jpeg = sorted((r for r in records if r.stream == "jpeg-cam"), key=lambda r: r.seq)
    assert len(jpeg) == 5
    assert sum(r.top1 == expected_images[n]["top1_label"] for r, n in zip(jpeg, names, strict=False)) >= 4
    first = raw[0]
    assert first.model == ModelIdentity("mobilenet_v2_1.0_224_imagenet", runtime.sha256[:12])
    assert first.scene == "animals" and first.replica == "r1"
    assert 1 <= first.batch_size <= 8 and first.inference_ms > 0 and first.total_ms >= first.queue_ms
    assert client.hget(stats_key("raw-cam"), "inferred") == b"10"
    assert client.xpending(frames_key("raw-cam"), INFERENCE_GROUP)["pending"] == 0


def test_poison_entry_goes_to_dead_letter_at_once(clean_redis_url: str, runtime: ModelRuntime) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    good = FrameMessage.whole(stream_id="cam", seq=0, capture_ts_ns=time.time_ns(),
                              pixels=np.zeros((224, 224, 3), np.uint8))
    client.xadd(frames_key("cam"), encode_frame(good))  # type: ignore[arg-type]
    bad = encode_frame(good)
    bad["data"] = b"short"
    client.xadd(frames_key("cam"), bad)  # type: ignore[arg-type]
    with FrameConsumer(consumer_options([clean_redis_url], "r1", ["cam"])) as c:
        loop = InferenceLoop(runtime, c, writer_for(c), loop_options(batch_size=8, batch_window_s=0.01))
        assert loop.step() == 1
    [(_, dl)] = client.xrange(DEADLETTER_KEY)
    assert dl[b"reason"].startswith(b"undecodable frame: stream cam: raw frame has 5 bytes")
    assert client.hget(stats_key("cam"), "dead_lettered") == b"1"
    assert client.hget(stats_key("cam"), "inferred") == b"1"


def test_a_frame_naming_another_camera_is_dead_lettered_not_miscounted(clean_redis_url: str,
                                                                       runtime: ModelRuntime) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    px = np.zeros((224, 224, 3), np.uint8)
    for stream_id in ("cam-a", "cam-b"):
        client.xadd(frames_key(stream_id), encode_frame(FrameMessage.whole(stream_id, 0, time.time_ns(), px)))  # type: ignore[arg-type]
    # An entry in cam-a's stream that says it is cam-b's (a foreign writer, or a bug).
    client.xadd(frames_key("cam-a"), encode_frame(FrameMessage.whole("cam-b", 1, time.time_ns(), px)))  # type: ignore[arg-type]
    with FrameConsumer(consumer_options([clean_redis_url], "r1", ["cam-a", "cam-b"])) as c:
        loop = InferenceLoop(runtime, c, writer_for(c), loop_options(batch_size=8, batch_window_s=0.01))
        assert loop.step() == 2
    [(_, dl)] = client.xrange(DEADLETTER_KEY)
    assert dl[b"stream"] == b"cam-a" and b"says it is from stream 'cam-b'" in dl[b"reason"]
    records = [ResultRecord.from_fields(f) for _, f in client.xrange(RESULTS_KEY)]
    assert sorted(r.stream for r in records) == ["cam-a", "cam-b"]  # one result each, none mislabelled
    a, b = client.hgetall(stats_key("cam-a")), client.hgetall(stats_key("cam-b"))
    assert (a[b"inferred"], a[b"dead_lettered"]) == (b"1", b"1")
    assert b[b"inferred"] == b"1" and b"dead_lettered" not in b


class ExplodingRuntime:
    """Stands in for a model whose batch fails (e.g. out of GPU memory)."""

    name, version = "boom", "0"

    def classify(self, frames: Any, where: Any = None) -> Any:
        raise RuntimeError("CUDA error: out of memory")


class FailsOnce:
    """The real runtime, whose first batch fails (a transient GPU error)."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime, self.failed = runtime, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)

    def classify(self, frames: Any, where: Any = None) -> Any:
        if not self.failed:
            self.failed = True
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.runtime.classify(frames, where)


def test_a_recovered_error_is_history_not_the_current_state(clean_redis_url: str, runtime: ModelRuntime) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    px = np.zeros((224, 224, 3), np.uint8)
    with FrameConsumer(consumer_options([clean_redis_url], "r1", ["cam"])) as c:
        loop = InferenceLoop(FailsOnce(runtime), c, writer_for(c), loop_options(batch_size=4, batch_window_s=0.01))  # type: ignore[arg-type]
        for seq in range(2):
            client.xadd(frames_key("cam"), encode_frame(FrameMessage.whole("cam", seq, time.time_ns(), px)))  # type: ignore[arg-type]
            loop.step()
            if seq == 0:
                assert "illegal memory access" in loop.stats.last_error
    assert loop.stats.batches == 1 and loop.stats.last_error == ""
    assert "illegal memory access" in loop.stats.previous_error and loop.stats.previous_error_at is not None


def test_failing_batches_are_retried_then_dead_lettered(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    msg = FrameMessage.whole(stream_id="cam", seq=0, capture_ts_ns=time.time_ns(), pixels=np.zeros((4, 4, 3), np.uint8))
    client.xadd(frames_key("cam"), encode_frame(msg))  # type: ignore[arg-type]
    opts = consumer_options([clean_redis_url], "r1", ["cam"], claim_idle_s=0.01,
                           max_deliveries=2)
    with FrameConsumer(opts) as c:
        loop = InferenceLoop(ExplodingRuntime(), c, writer_for(c), loop_options(batch_size=4, batch_window_s=0.01,  # type: ignore[arg-type]
                                                                reclaim_every_s=0))
        for _ in range(6):
            loop.step()
            time.sleep(0.02)
    assert loop.stats.failures == 2
    [(_, dl)] = client.xrange(DEADLETTER_KEY)
    assert dl[b"reason"] == b"failed 2 deliveries: RuntimeError: CUDA error: out of memory"
    assert client.xpending(frames_key("cam"), INFERENCE_GROUP)["pending"] == 0


class OverlapProbe:
    """The real runtime, counting how many classify calls run at the same moment."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self._runtime = runtime
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runtime, name)

    def classify(self, frames: np.ndarray, where: Any = None) -> Any:
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            return self._runtime.classify(frames, where)
        finally:
            with self._lock:
                self.active -= 1


def test_lanes_classify_side_by_side_and_answer_every_frame_once(clean_redis_url: str, shared_model: Path,
                                                                        images_dir: Path) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    streams = ["a", "b", "c"]
    for stream_id in streams:
        publish_photos(client, stream_id, images_dir, ["cat.png", "bird.png", "hot_dog.png", "grace_hopper.png"] * 5,
                       "raw")
    # The frames wait while the model loads: no staleness here, this test is about the lanes.
    opts = consumer_options([clean_redis_url], "r1", streams, max_frame_age_ms=60_000)
    with ModelRuntime(shared_model, RuntimeOptions(device="cpu", batch_size=8, lanes=2)) as rt, \
            FrameConsumer(opts) as c:
        probe = OverlapProbe(rt)
        loop = InferenceLoop(probe, c, writer_for(c), loop_options(batch_size=8, batch_window_s=0.01, lanes=2))  # type: ignore[arg-type]
        stop = threading.Event()
        runner = threading.Thread(target=loop.run, args=(stop,))
        runner.start()
        deadline = time.monotonic() + 60
        while loop.stats.frames < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        runner.join(30)
    assert not runner.is_alive()
    assert probe.max_active == 2
    records = [ResultRecord.from_fields(f) for _, f in client.xrange(RESULTS_KEY)]
    assert len(records) == 60 and loop.stats.frames == 60
    assert len({r.frame_id for r in records}) == 60
    assert loop.lane_batch == 4 and max(r.batch_size for r in records) <= 4  # each lane: its half of 8
    assert {r.stream for r in records} == set(streams)
    assert all(client.xpending(frames_key(s), INFERENCE_GROUP)["pending"] == 0 for s in streams)
    assert sum(int(client.hget(stats_key(s), "inferred") or 0) for s in streams) == 60


def test_http_classify_splits_over_the_lanes(clean_redis_url: str, shared_model: Path, images_dir: Path,
                                             expected_images: dict[str, Any]) -> None:
    frames = np.stack([resize(read_image_rgb(images_dir / n), 224, 224) for n in expected_images])
    opts = consumer_options([clean_redis_url], "r1", [])
    with ModelRuntime(shared_model, RuntimeOptions(device="cpu", lanes=2)) as rt, FrameConsumer(opts) as c:
        probe = OverlapProbe(rt)
        loop = InferenceLoop(probe, c, writer_for(c), loop_options(lanes=2))  # type: ignore[arg-type]
        got = loop.classify(frames)
        assert loop.classify(frames[:0]) == [] and len(loop.classify(frames[:1])) == 1
    assert [f.top_k[0].name for f in got] == [e["top1_label"] for e in expected_images.values()]
    assert probe.max_active == 2


def test_jpeg_frames_are_decoded_in_parallel_with_the_same_results(clean_redis_url: str, runtime: ModelRuntime,
                                                                    images_dir: Path,
                                                                    expected_images: dict[str, Any]) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    names = list(expected_images)
    publish_photos(client, "par-cam", images_dir, names, "jpeg")
    poison = encode_frame(FrameMessage.whole("par-cam", 99, time.time_ns(), np.zeros((224, 224, 3), np.uint8)), "jpeg")
    poison["data"] = b"not a jpeg"
    client.xadd(frames_key("par-cam"), poison)  # type: ignore[arg-type]
    stop = threading.Event()
    with FrameConsumer(consumer_options([clean_redis_url], "r1", ["par-cam"])) as c:
        loop = InferenceLoop(runtime, c, writer_for(c),
                             loop_options(batch_size=16, batch_window_s=0.2, decode_threads=4))
        thread = threading.Thread(target=loop.run, args=(stop,))
        thread.start()
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while client.xlen(RESULTS_KEY) < len(names) and time.monotonic() < deadline:
            seen |= {t.name.split("_")[0] for t in threading.enumerate()}
            time.sleep(0.01)
        stop.set()
        thread.join(30)
    assert "decode" in seen  # the batch was decoded on the loop's decode threads
    records = sorted((ResultRecord.from_fields(f) for _, f in client.xrange(RESULTS_KEY)), key=lambda r: r.seq)
    assert [r.seq for r in records] == list(range(len(names)))  # each frame once, the poison one dead-lettered
    assert sum(r.top1 == expected_images[n]["top1_label"] for r, n in zip(records, names, strict=True)) >= 8
    assert client.hget(stats_key("par-cam"), "dead_lettered") == b"1"
    assert not any(t.name.startswith("decode") for t in threading.enumerate())  # the pool is gone with run()


def test_decode_threads_auto_only_for_jpeg_on_one_lane() -> None:
    auto = InferenceConfig()
    assert LoopOptions.from_config(auto, lanes=1, replica="r", jpeg=True).decode_threads == min(8, usable_cpus())
    assert LoopOptions.from_config(auto, lanes=1, replica="r", jpeg=False).decode_threads == 1
    assert LoopOptions.from_config(auto, lanes=2, replica="r", jpeg=True).decode_threads == 1
    assert LoopOptions.from_config(InferenceConfig(decode_threads=3), lanes=2, replica="r").decode_threads == 3


def test_one_lane_reads_ahead_from_each_shard_in_its_own_thread(redis_server: RedisServer, runtime: ModelRuntime,
                                                                images_dir: Path) -> None:
    """Two shards (two databases of one Redis), two reader threads: each reads its own shard's cameras, and
    every frame still gets exactly one result, on its own shard."""
    urls = [redis_server.url(db=7), redis_server.url(db=8)]
    clients = [redis.Redis.from_url(u) for u in urls]
    for c in clients:
        c.flushdb()
    layout = BusLayout(urls)
    cameras = [f"cam-{i}" for i in range(8)]
    assert {layout.shard_of(s) for s in cameras} == {0, 1}
    for stream_id in cameras:
        publish_photos(clients[layout.shard_of(stream_id)], stream_id, images_dir, ["cat.png", "bird.png"] * 3, "raw")
    opts = consumer_options(urls, "r1", cameras, max_frame_age_ms=60_000)
    read_by: dict[str, set[int]] = {}
    with FrameConsumer(opts) as c:
        original = c.read_batch

        def recording(*args: Any, **kwargs: Any) -> Any:
            got = original(*args, **kwargs)
            if got:
                read_by.setdefault(threading.current_thread().name, set()).update(d.shard for d in got)
            return got

        c.read_batch = recording  # type: ignore[method-assign]
        loop = InferenceLoop(runtime, c, writer_for(c), loop_options(batch_size=8, batch_window_s=0.01,
                                                                     reader_threads=2))
        stop = threading.Event()
        thread = threading.Thread(target=loop.run, args=(stop,))
        thread.start()
        deadline = time.monotonic() + 60
        while loop.stats.frames < 48 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        thread.join(30)
    assert read_by == {"inference-reader-0": {0}, "inference-reader-1": {1}}, read_by
    for shard, client in enumerate(clients):
        mine = [s for s in cameras if layout.shard_of(s) == shard]
        records = [ResultRecord.from_fields(f) for _, f in client.xrange(RESULTS_KEY)]
        assert sorted((r.stream, r.seq) for r in records) == sorted((s, i) for s in mine for i in range(6))
        assert all(client.xpending(frames_key(s), INFERENCE_GROUP)["pending"] == 0 for s in mine)
        client.flushdb()
        client.close()


def test_reader_threads_auto_one_per_shard_up_to_four_on_one_lane() -> None:
    auto = InferenceConfig()
    assert LoopOptions.from_config(auto, lanes=1, replica="r", shards=2).reader_threads == 2
    assert LoopOptions.from_config(auto, lanes=1, replica="r", shards=16).reader_threads == 4
    assert LoopOptions.from_config(auto, lanes=2, replica="r", shards=16).reader_threads == 1
    eight = InferenceConfig(reader_threads=8)
    assert LoopOptions.from_config(eight, lanes=1, replica="r", shards=3).reader_threads == 3
