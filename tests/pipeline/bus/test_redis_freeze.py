"""A Redis frozen (SIGSTOP) longer than the client's timeout, then thawed: the accounting stays exact."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import numpy as np

from pipeline.bus.publisher import FrameBus
from pipeline.bus.wire import FrameMessage
from pipeline.core.errors import BusError
from pipeline.core.keys import frames_key, stats_key
from tests.fixtures.services import RedisServer
from tests.pipeline.bus.test_freshness import evicted
from tests.pipeline.bus.test_publisher import bus_options
from tests.pipeline.bus.test_reader import consumer, fake_record
from tests.pipeline.options import writer_for


def test_writes_that_time_out_and_then_run_are_counted_once(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory()
    assert server.proc is not None
    px = np.zeros((8, 8, 3), np.uint8)
    ok, failed = 0, 0
    with consumer(server.url(), "r1", ["cam"], max_frame_age_ms=60_000) as c, \
            FrameBus(bus_options([server.url()], socket_timeout_s=0.5, backoff_base_s=0.05, backoff_cap_s=0.1)) as bus:
        def publish() -> None:
            nonlocal ok, failed
            for seq in range(150):
                try:
                    bus.publish(FrameMessage.whole("cam", seq, time.time_ns(), px))
                    ok += 1
                except BusError:
                    failed += 1  # what the ingest worker counts as dropped (bus_error / bus_down)
                time.sleep(0.02)

        publisher = threading.Thread(target=publish)
        publisher.start()
        time.sleep(1.0)
        os.kill(server.proc.pid, signal.SIGSTOP)
        time.sleep(1.5)
        os.kill(server.proc.pid, signal.SIGCONT)
        publisher.join(30)
        while batch := c.read_batch(64, window_s=0.01, idle_block_s=0.2):
            writer_for(c).write([(d, [fake_record(d)]) for d in batch])
    client = server.client()
    stats = {k.decode(): int(v) for k, v in client.hgetall(stats_key("cam")).items()}  # type: ignore[union-attr]
    added = int(client.xinfo_stream(frames_key("cam"))["entries-added"])  # type: ignore[index]
    assert failed > 0 and ok + failed == 150  # the freeze was felt
    # Redis' own count is exact: every frame written is classified (or counted dropped), once.
    assert stats["published"] == added == stats["inferred"] + stats.get("dropped_stale", 0) + evicted(client, "cam")
    assert stats["published"] >= ok  # writes that timed out on the client and ran on thaw are in it
