"""The result writer on a real Redis: results, acks and counters in one transaction."""

from __future__ import annotations

import pytest
import redis

from pipeline.core.classification import FrameClassification, Label
from pipeline.core.errors import ResultFormatError
from pipeline.core.keys import INFERENCE_GROUP, RESULTS_KEY, frames_key, stats_key
from pipeline.core.model_identity import ModelIdentity
from pipeline.results.record import ResultRecord
from tests.pipeline.bus.test_reader import consumer, fake_record, publish
from tests.pipeline.options import writer_for


def test_write_results_and_acks_atomically(clean_redis_url: str) -> None:
    client = redis.Redis.from_url(clean_redis_url)
    publish(client, "cam", 4)
    with consumer(clean_redis_url, "c1", ["cam"]) as c:
        batch = c.read_batch(4, window_s=0.05)
        assert client.xpending(frames_key("cam"), INFERENCE_GROUP)["pending"] == 4
        writer_for(c).write([(d, [fake_record(d)]) for d in batch])
    assert client.xpending(frames_key("cam"), INFERENCE_GROUP)["pending"] == 0
    results = client.xrange(RESULTS_KEY)
    assert [ResultRecord.from_fields(f).frame_id for _, f in results] == [d.entry_id for d in batch]
    assert client.hget(stats_key("cam"), "inferred") == b"4"


def test_a_record_round_trips_with_its_typed_classification() -> None:
    cls = FrameClassification([Label(282, "tiger cat", 0.61), Label(281, "tabby, tabby cat", 0.2)],
                              Label(0, "animals", 0.93))
    record = ResultRecord(stream="cam", zone="full", seq=3, frame_id="1-0", capture_ts=1.0, inference_ts=1.5,
                          model=ModelIdentity("m", "v"), classification=cls, queue_ms=1.0, inference_ms=2.0,
                          batch_size=4, replica="r")
    back = ResultRecord.from_fields(record.to_fields())
    assert back.classification.top1 == Label(282, "tiger cat", 0.61)
    assert back.top1 == "tiger cat" and back.scene == "animals"
    assert back.classification.score_of("tabby, tabby cat") == 0.2 and back.classification.score_of("dog") == 0.0


@pytest.mark.parametrize("bad", [{"top_k": "cat"}, {"top_k": [{"label": "cat"}]}, {"top_k": [], "scene": 3},
                                 {"top_k": [{"index": "x", "label": "cat", "score": 1}]}])
def test_a_malformed_classification_is_rejected_once_where_it_is_read(bad: dict[str, object]) -> None:
    doc = {"v": 1, "stream": "cam", "seq": 0, "frame_id": "1-0", "capture_ts": 1.0, "inference_ts": 2.0,
           "model": {"name": "m", "version": "v"}, "latency_ms": {"queue": 0, "inference": 0, "total": 0},
           "batch_size": 1, "replica": "r", **bad}
    with pytest.raises(ResultFormatError, match="malformed result record"):
        ResultRecord.from_dict(doc)


def test_a_frame_written_twice_gets_one_result_and_one_count(clean_redis_url: str) -> None:
    # A batch whose write was held up (a frozen Redis) can be reclaimed and classified again meanwhile:
    # both writes arrive; only the first answers the frame.
    client = redis.Redis.from_url(clean_redis_url)
    publish(client, "cam", 3)
    with consumer(clean_redis_url, "c1", ["cam"]) as c:
        batch = c.read_batch(3, window_s=0.05)
        writer = writer_for(c)
        writer.write([(d, [fake_record(d)]) for d in batch])
        writer.write([(d, [fake_record(d)]) for d in batch[1:]])  # the second classification of two of them
    assert [ResultRecord.from_fields(f).frame_id for _, f in client.xrange(RESULTS_KEY)] == [d.entry_id for d in batch]
    assert client.hget(stats_key("cam"), "inferred") == b"3"
