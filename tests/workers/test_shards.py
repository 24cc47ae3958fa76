"""Two `vigil ingest` shards, one SIGKILLed and restarted, and a `vigil sink`, on one host and one config:
the identity ``published = inferred + dropped + dead_lettered`` holds exactly per camera from Redis alone
(the counters live there, not in the processes), and each worker serves /metrics on a port of its own."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis
import yaml

from pipeline.core.keys import stats_key
from tests.fixtures.services import free_port, wait_for
from tests.pipeline.inference.test_serving import deploy, ray_serve  # noqa: F401  (the module's Serve fixture)
from tests.pipeline.ops.test_runner import scrape

CAMERAS = ["shard-a", "shard-b", "shard-c", "shard-d"]


class Process:
    """A `vigil` worker in a child process; ``port`` is the /metrics port it printed."""

    def __init__(self, args: list[str], log: Path, said: str) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], stdout=out,
                                         stderr=subprocess.STDOUT)
        pattern = re.compile(re.escape(said) + r"\D*(\d+)\s*$", re.MULTILINE)
        assert wait_for(lambda: pattern.search(self.text()) is not None or self.proc.poll() is not None, 60)
        found = pattern.search(self.text())
        assert found, self.text()[-3000:]
        self.port = int(found.group(1))

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)


def test_two_shards_and_a_restart_keep_the_identity_exact_from_redis(
        ray_serve: int, clean_redis_url: str, shared_model: Path, video_dir: Path,  # noqa: F811
        tmp_path: Path) -> None:
    config = tmp_path / "vigil.yaml"
    config.write_text(yaml.safe_dump({
        "streams": [{"id": c, "url": str(video_dir / "slideshow.mp4"), "fps": 4, "loop": True} for c in CAMERAS],
        "redis": {"urls": [clean_redis_url]},
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "results.jsonl")}],
        "metrics": {"port": free_port()},  # one port in the config: each worker is given its own below
    }))
    deploy(clean_redis_url, shared_model, CAMERAS, replicas=1)
    sink = Process(["sink", "-c", str(config), "--metrics-port", "0"], tmp_path / "sink.log",
                   "vigil sink: metrics on 127.0.0.1:")
    shards = [Process(["ingest", "-c", str(config), "--shard", f"{i}/2", "--metrics-port", "0"],
                      tmp_path / f"ingest-{i}.log", "vigil ingest: http on port") for i in range(2)]
    assert len({sink.port, *(s.port for s in shards)}) == 3
    client = redis.Redis.from_url(clean_redis_url)

    def published(stream_id: str) -> int:
        return int(client.hget(stats_key(stream_id), "published") or 0)

    try:
        assert wait_for(lambda: all(published(c) >= 8 for c in CAMERAS), 90), [published(c) for c in CAMERAS]
        shards[1].stop(signal.SIGKILL)  # no goodbye: whatever it wrote is counted in Redis, with the frame
        before = {c: published(c) for c in CAMERAS}
        time.sleep(2)
        shards[1] = Process(["ingest", "-c", str(config), "--shard", "1/2", "--metrics-port", "0"],
                            tmp_path / "ingest-1-again.log", "vigil ingest: http on port")
        assert wait_for(lambda: all(published(c) >= before[c] + 8 for c in CAMERAS), 90)
        for shard in shards:
            shard.stop()

        def drained() -> bool:
            m = scrape(sink.port)
            return all(m.get(("vigil_pipeline_queue_frames", c), 1) == 0 for c in CAMERAS)

        assert wait_for(drained, 60), {k: v for k, v in scrape(sink.port).items() if "queue" in k[0]}
        m = scrape(sink.port)  # the sink worker's view: read from Redis at the scrape
        for c in CAMERAS:
            total = m[("vigil_pipeline_published_frames_total", c)]
            done = (m[("vigil_pipeline_inferred_frames_total", c)] + m[("vigil_pipeline_dropped_frames_total", c)]
                    + m[("vigil_pipeline_dead_lettered_frames_total", c)])
            assert total == published(c) and total >= before[c] + 8  # one counter across both lives of shard 1
            assert total == done, (c, total, done)
    finally:
        for p in (*shards, sink):
            p.stop()
        client.close()
